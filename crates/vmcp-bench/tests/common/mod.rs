//! What the smoke tests share: the server binaries beside this test's profile.

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>` of this test executable (`target/<profile>/deps/<test>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps").to_path_buf()
}

/// `vmcp` and `vmcp-fixture` beside this test's profile, built if missing.
pub fn servers() -> (PathBuf, PathBuf) {
    let dir = profile_dir();
    let (vmcp, fixture) = (dir.join("vmcp"), dir.join("vmcp-fixture"));
    if !vmcp.exists() || !fixture.exists() {
        let target = dir.parent().expect("target dir").to_path_buf();
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "vmcp", "-p", "vmcp-fixture"]).env("CARGO_TARGET_DIR", &target);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().expect("cargo build").success(), "building vmcp and vmcp-fixture");
    }
    (vmcp, fixture)
}
