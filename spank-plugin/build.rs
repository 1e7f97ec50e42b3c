//! Makes the Rust binding of Slurm's `spank.h` (`$OUT_DIR/spank_sys.rs`, included by `src/sys.rs`).
//!
//! With Slurm's development headers (`libslurm-dev`) and libclang installed, bindgen generates it
//! from those headers, so the exported `plugin_version` is the `SLURM_VERSION_NUMBER` of the Slurm
//! the plugin is built for: Slurm refuses a plugin whose major.minor release differs from its own.
//!
//! Without them (a machine with only a Rust toolchain), the checked-in `bindings/spank_sys.rs`
//! (generated from Debian 12's Slurm 22.05 headers) is used instead, with a `cargo:warning`: that
//! plugin then loads only into Slurm 22.05. `tests/binding.rs` checks that the checked-in file is
//! what bindgen makes from the installed headers, and regenerates it (docs/development.md).
//!
//! `SLURM_INCLUDE_DIR` (default `/usr/include`) names the directory that holds `slurm/spank.h`;
//! `LIBCLANG_PATH` the directory of libclang, when it is not where clang-sys looks by default.
//! `QLAM_SPANK_REQUIRE_HEADERS=1` makes a missing header or libclang an error instead (a build
//! for a cluster whose Slurm is not 22.05).
//! bindgen is built with its `runtime` feature: libclang is opened when the build script runs, so
//! the build script itself compiles without it.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// The binding checked into the repository, relative to the package.
const CHECKED_IN: &str = "bindings/spank_sys.rs";
/// The headers the binding is made from, under `$SLURM_INCLUDE_DIR/slurm/`.
const HEADERS: [&str; 4] = ["spank.h", "slurm_version.h", "slurm_errno.h", "slurm.h"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={CHECKED_IN}");
    println!("cargo:rerun-if-env-changed=SLURM_INCLUDE_DIR");
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");
    println!("cargo:rerun-if-env-changed=QLAM_SPANK_REQUIRE_HEADERS");

    let include_dir =
        PathBuf::from(env::var_os("SLURM_INCLUDE_DIR").unwrap_or_else(|| "/usr/include".into()));
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("spank_sys.rs");

    // Whichever way the binding is made, the tests can tell which (tests/binding.rs).
    match missing_input(&include_dir) {
        None => {
            generate(&include_dir, &out);
            println!("cargo:rustc-env=QLAM_SPANK_BINDING=bindgen");
        }
        Some(missing) if env::var_os("QLAM_SPANK_REQUIRE_HEADERS").is_some_and(|v| v == "1") => {
            panic!(
                "{missing}, and QLAM_SPANK_REQUIRE_HEADERS=1 forbids the checked-in binding: \
                 install Slurm's development headers and libclang (Debian: apt-get install \
                 libslurm-dev libclang-dev), point SLURM_INCLUDE_DIR at the directory that holds \
                 slurm/spank.h, or LIBCLANG_PATH at libclang's directory"
            );
        }
        Some(missing) => {
            let checked_in = fs::read_to_string(CHECKED_IN)
                .unwrap_or_else(|e| panic!("cannot read the checked-in binding {CHECKED_IN}: {e}"));
            println!(
                "cargo:warning={missing}: using the checked-in binding {CHECKED_IN}, made from \
                 Slurm {} headers. The plugin then carries that release's plugin_version and \
                 loads only into Slurm {0}; for any other Slurm, rebuild with its headers and \
                 libclang (Debian: apt-get install libslurm-dev libclang-dev)",
                slurm_release(&checked_in)
            );
            fs::write(&out, checked_in).expect("could not write the spank binding into OUT_DIR");
            println!("cargo:rustc-env=QLAM_SPANK_BINDING=checked-in");
        }
    }
}

/// What prevents generating the binding here, if anything: a missing header or libclang.
fn missing_input(include_dir: &Path) -> Option<String> {
    // Headers installed later are noticed (cargo watches a directory recursively); a path that
    // does not exist is not watched, or cargo would rerun this script on every build.
    let slurm_dir = include_dir.join("slurm");
    for watched in [&slurm_dir, include_dir] {
        if watched.is_dir() {
            println!("cargo:rerun-if-changed={}", watched.display());
            break;
        }
    }
    for header in HEADERS {
        let path = slurm_dir.join(header);
        if !path.is_file() {
            return Some(format!("{} not found", path.display()));
        }
    }
    // Loads libclang into this thread, where bindgen finds it already loaded.
    if let Err(e) = clang_sys::load() {
        return Some(format!("libclang not found ({e})"));
    }
    None
}

/// Generates the binding from the installed headers with bindgen.
fn generate(include_dir: &Path, out: &Path) {
    let bindings = bindgen::Builder::default()
        .header_contents(
            "qlam_spank_wrapper.h",
            "#include <slurm/spank.h>\n#include <slurm/slurm_version.h>\n#include <slurm/slurm.h>\n",
        )
        .clang_arg(format!("-I{}", include_dir.display()))
        // C enums become modules of integer constants: a value Slurm sends that this build does
        // not know stays an integer, and is converted with a checked TryFrom in ffi.rs (a Rust
        // enum holding an unknown discriminant would be undefined behaviour).
        .default_enum_style(bindgen::EnumVariation::ModuleConsts)
        .allowlist_function("spank_remote")
        .allowlist_function("spank_context")
        .allowlist_function("spank_option_register")
        .allowlist_function("spank_option_getopt")
        .allowlist_function("spank_get_item")
        .allowlist_function("spank_getenv")
        .allowlist_function("spank_setenv")
        .allowlist_function("spank_unsetenv")
        .allowlist_function("spank_strerror")
        .allowlist_function("slurm_info")
        .allowlist_function("slurm_error")
        .allowlist_function("slurm_verbose")
        .allowlist_function("slurm_debug")
        .allowlist_function("slurm_debug2")
        .allowlist_type("spank_t")
        .allowlist_type("spank_option")
        .allowlist_type("spank_item")
        .allowlist_type("spank_context")
        .allowlist_type("spank_err_t")
        .allowlist_var("SLURM_VERSION_NUMBER")
        .allowlist_var("ESPANK_SUCCESS")
        .allowlist_var("SLURM_BATCH_SCRIPT")
        .allowlist_var("SPANK_OPTION_MAXLEN")
        .layout_tests(false)
        .derive_debug(true)
        .generate_comments(false)
        .generate()
        .expect("bindgen could not generate the binding of slurm/spank.h");
    bindings
        .write_to_file(out)
        .expect("could not write the spank binding into OUT_DIR");
}

/// "major.minor" of the `SLURM_VERSION_NUMBER` in a binding, for the warning.
fn slurm_release(binding: &str) -> String {
    let number = binding
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("pub const SLURM_VERSION_NUMBER: u32 = ")
        })
        .and_then(|rest| rest.trim_end_matches(';').parse::<u32>().ok());
    match number {
        // SLURM_VERSION_NUM(a, b, c) is (a << 16) + (b << 8) + c.
        Some(n) => format!("{}.{:02}", n >> 16, (n >> 8) & 0xff),
        None => "(unknown release)".to_string(),
    }
}
