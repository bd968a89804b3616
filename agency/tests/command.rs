//! The `govbus-agency` command as an agency's IT team meets it before anything is connected.
use std::process::Command;

fn agency(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_govbus-agency"))
        .args(args)
        .env_remove("GOVBUS__AMQP__URL")
        .output()
        .expect("govbus-agency runs")
}

/// The agency's command offers the agency's tools (tail, sink) and none of the platform's.
#[test]
fn offers_the_agency_tools_only() {
    let out = agency(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for tool in ["tail", "sink"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(tool)),
            "`{tool}` missing from:\n{help}"
        );
    }
    for platform in ["provision", "ledger", "replay", "workflow", "backup"] {
        assert!(
            !help.contains(platform),
            "the platform's `{platform}` in:\n{help}"
        );
    }
}

/// A wrong `--env-file` stops the tool with an error that names the file; nothing is consumed.
#[test]
fn a_missing_env_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("civil.env");
    let out = agency(&[
        "tail",
        "--agency",
        "civil",
        "--env-file",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read --env-file") && err.contains(missing.to_str().unwrap()),
        "{err}"
    );
}

/// An env file written for another agency is refused, naming both agencies.
#[test]
fn another_agencys_env_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hrss.env");
    std::fs::write(&file, "GOVBUS_ROLE=agency\nGOVBUS_AGENCY=hrss\n").unwrap();
    let out = agency(&[
        "sink",
        "--agency",
        "civil",
        "--env-file",
        file.to_str().unwrap(),
        "--webhook",
        "http://127.0.0.1:9/records",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("agency hrss's file, not civil's"), "{err}");
}
