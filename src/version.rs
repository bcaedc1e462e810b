//! What this binary is: the crate version, the commit it was built from and the build date,
//! recorded by `build.rs`. Shown by `driftwarden version` and `--version`, and written into every
//! JSON report (`tool_version`, `tool_commit`, `tool_build_date`).

/// The crate version, e.g. `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The full commit id the binary was built from, or `unknown` when the build had neither Git,
/// a `cargo package` record nor `DRIFTWARDEN_BUILD_COMMIT` (see build.rs).
pub const COMMIT: &str = env!("DRIFTWARDEN_COMMIT");

/// The build date, `YYYY-MM-DD` in UTC (`SOURCE_DATE_EPOCH` when the build set it).
pub const BUILD_DATE: &str = env!("DRIFTWARDEN_BUILD_DATE");

/// `0.1.0 (commit 0123456789ab, built 2026-12-07)`: what `--version` prints after the name.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("DRIFTWARDEN_COMMIT"),
    ", built ",
    env!("DRIFTWARDEN_BUILD_DATE"),
    ")"
);

/// The lines `driftwarden version` prints.
pub fn report() -> String {
    format!(
        "driftwarden {VERSION}\ncommit: {COMMIT}\nbuild date: {BUILD_DATE}\ntarget: {}-{}\n",
        std::env::consts::ARCH,
        std::env::consts::OS
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_version_names_version_commit_and_date() {
        assert!(LONG.starts_with(VERSION));
        assert!(LONG.contains(COMMIT));
        assert!(LONG.contains(BUILD_DATE));
        assert!(COMMIT == "unknown" || COMMIT.bytes().all(|b| b.is_ascii_hexdigit()));
        let d: Vec<&str> = BUILD_DATE.split('-').collect();
        assert_eq!(d.len(), 3, "{BUILD_DATE}");
        assert_eq!([d[0].len(), d[1].len(), d[2].len()], [4, 2, 2]);
    }
}
