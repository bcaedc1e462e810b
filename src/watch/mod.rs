//! `driftwarden watch`: the long-running reconciler.
//!
//! The operational pieces: [`lease`] (leader election on a Lease), [`http`] (the `/metrics`,
//! `/healthz`, `/readyz` endpoints) and [`webhook`] (GitHub push events that trigger a re-read).

pub mod lease;
