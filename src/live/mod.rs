//! Live state: the objects as they are. Today from snapshot files ([`snapshot`]); a cluster
//! reader slots in beside it with the same output.

pub mod snapshot;

pub use snapshot::{LiveError, load_snapshot};
