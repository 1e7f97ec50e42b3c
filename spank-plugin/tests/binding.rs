//! The checked-in binding (`bindings/spank_sys.rs`, used by build.rs when the Slurm headers or
//! libclang are absent) is exactly what bindgen makes from the installed headers, so it cannot
//! rot. Regenerate it after a change of build.rs's allowlist or of the Slurm release it stands for:
//!
//!     QLAM_SPANK_UPDATE_BINDING=1 cargo test -p qlam-spank --test binding -- --include-ignored

use std::path::Path;

/// The first lines of the checked-in file; bindgen's output follows them unchanged.
const HEADER: &str = "\
// The binding of Slurm's spank.h that build.rs uses when the Slurm headers or libclang are
// absent: bindgen's output for Debian 12's libslurm-dev (Slurm 22.05), with build.rs's allowlist.
// Do not edit. Regenerate and check (docs/development.md):
//   QLAM_SPANK_UPDATE_BINDING=1 cargo test -p qlam-spank --test binding -- --include-ignored
";

#[test]
#[ignore = "needs Slurm's headers (libslurm-dev) and libclang: run by tests/run-all.sh"]
fn checked_in_binding_is_what_bindgen_makes_from_the_installed_headers() {
    assert_eq!(
        env!("QLAM_SPANK_BINDING"),
        "bindgen",
        "build.rs used the checked-in binding: install libslurm-dev and libclang-dev \
         (tests/slurm/install-deps.sh), or set SLURM_INCLUDE_DIR/LIBCLANG_PATH, then rerun"
    );
    let generated = include_str!(concat!(env!("OUT_DIR"), "/spank_sys.rs"));
    let expected = format!("{HEADER}{generated}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("bindings/spank_sys.rs");
    if std::env::var_os("QLAM_SPANK_UPDATE_BINDING").is_some() {
        std::fs::write(&path, &expected).expect("write bindings/spank_sys.rs");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).expect("read bindings/spank_sys.rs");
    assert!(
        checked_in == expected,
        "bindings/spank_sys.rs differs from what bindgen makes from the installed headers; \
         regenerate it: QLAM_SPANK_UPDATE_BINDING=1 cargo test -p qlam-spank --test binding -- \
         --include-ignored (and review the diff)"
    );
}
