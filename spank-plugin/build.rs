//! Generates the Rust binding of Slurm's `spank.h` with bindgen.
//!
//! The binding is made from the headers installed on the build machine (`libslurm-dev`), so the
//! exported `plugin_version` is the `SLURM_VERSION_NUMBER` of the Slurm the plugin is built for:
//! Slurm refuses a plugin whose major.minor release differs from its own.
//!
//! `SLURM_INCLUDE_DIR` (default `/usr/include`) names the directory that holds `slurm/spank.h`.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SLURM_INCLUDE_DIR");

    let include_dir =
        PathBuf::from(env::var_os("SLURM_INCLUDE_DIR").unwrap_or_else(|| "/usr/include".into()));
    let headers = ["spank.h", "slurm_version.h", "slurm_errno.h", "slurm.h"];
    for header in headers {
        let path = include_dir.join("slurm").join(header);
        if !path.is_file() {
            panic!(
                "{} not found: install Slurm's development headers \
                 (Debian: apt-get install libslurm-dev libclang-dev) \
                 or point SLURM_INCLUDE_DIR at the directory that holds slurm/spank.h",
                path.display()
            );
        }
        println!("cargo:rerun-if-changed={}", path.display());
    }

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

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("spank_sys.rs"))
        .expect("could not write the spank binding into OUT_DIR");
}
