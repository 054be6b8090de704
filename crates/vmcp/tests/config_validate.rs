//! `vmcp validate` on a directory holding `config.yaml` and `authserver-config.yaml`: the built
//! binary checks both files, reports the problems of both at once, and says whether an
//! authorization server was loaded.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `vmcp validate --config <config>`: (exit code, stdout, stderr).
fn validate(config: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vmcp"))
        .arg("validate")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

/// A fresh directory with `files` written into it.
fn dir_with(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmcp-validate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const MAIN: &str = "\
name: gw
backends:
  - name: notes
    transport: streamable-http
    url: http://127.0.0.1:4490/mcp
incomingAuth:
  type: oidc
  oidc:
    issuer: http://127.0.0.1:4483
    audience: http://127.0.0.1:4483/mcp
outgoingAuth:
  backends:
    notes:
      type: upstream_inject
      upstreamInject: {providerName: mock}
";

const AUTH: &str = "\
issuer: http://127.0.0.1:4483
allowed_audiences: [http://127.0.0.1:4483/mcp]
upstreams:
  - name: mock
    type: oidc
    oidc_config:
      issuer_url: http://127.0.0.1:8099
      client_id: vmcp-gateway
";

#[test]
fn the_example_validates_with_its_authorization_server() {
    let config = repo().join("examples/authserver/config.yaml");
    let (code, stdout, stderr) = validate(&config);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        format!("{}: valid (1 backend; authorization server: 1 upstream)\n", config.display())
    );
    // The example leaves out persistent keys, which validate points out.
    assert!(
        stderr.contains("warning: authserver-config.yaml: signing_key_config: not set"),
        "{stderr}"
    );
}

#[test]
fn both_files_are_checked_and_reported_together() {
    let dir = dir_with("ok", &[("config.yaml", MAIN), ("authserver-config.yaml", AUTH)]);
    let (code, stdout, _) = validate(&dir.join("config.yaml"));
    assert_eq!(code, 0);
    assert!(
        stdout.ends_with(": valid (1 backend; authorization server: 1 upstream)\n"),
        "{stdout}"
    );

    let main = MAIN.replace("issuer: http://127.0.0.1:4483", "issuer: http://127.0.0.1:9999");
    let auth =
        AUTH.replace("name: mock", "name: Mock").replace("upstreams:", "isuer: x\nupstreams:");
    // A schema error (unknown key) in the authorization server file is reported alone.
    let dir = dir_with("schema", &[("config.yaml", &main), ("authserver-config.yaml", &auth)]);
    let (code, stdout, stderr) = validate(&dir.join("config.yaml"));
    let as_file = dir.join("authserver-config.yaml").display().to_string();
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert_eq!(stderr, format!("{as_file}:3:1: isuer: unknown key; did you mean \"issuer\"?\n"));

    // Semantic problems of both files come together, the main file's first.
    let auth = auth.replace("isuer: x\n", "");
    std::fs::write(dir.join("authserver-config.yaml"), &auth).unwrap();
    let (code, _, stderr) = validate(&dir.join("config.yaml"));
    let main_file = dir.join("config.yaml").display().to_string();
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        format!(
            "{main_file}:9:5: incomingAuth.oidc.issuer: must be the issuer of \
             authserver-config.yaml, \"http://127.0.0.1:4483\": the gateway would reject every \
             token its authorization server issues\n\
             {main_file}:15:24: outgoingAuth.backends.notes.upstreamInject.providerName: unknown \
             upstream \"mock\"; did you mean \"Mock\"?\n\
             {as_file}:4:5: upstreams[0].name: invalid upstream name \"Mock\": use lowercase \
             letters, digits and '-', starting and ending with a letter or digit\n"
        )
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn without_the_file_there_is_no_authorization_server() {
    let main = MAIN.replace(
        "      type: upstream_inject\n      upstreamInject: {providerName: mock}\n",
        "      type: passthrough\n",
    );
    let dir = dir_with("none", &[("config.yaml", &main)]);
    let (code, stdout, stderr) = validate(&dir.join("config.yaml"));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.ends_with(": valid (1 backend)\n"), "{stdout}");

    // upstream_inject needs it.
    std::fs::write(dir.join("config.yaml"), MAIN).unwrap();
    let (code, _, stderr) = validate(&dir.join("config.yaml"));
    assert_eq!(code, 1);
    assert!(
        stderr.ends_with(
            ":15:24: outgoingAuth.backends.notes.upstreamInject.providerName: upstream_inject \
             needs the embedded authorization server: add authserver-config.yaml beside this file\n"
        ),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
