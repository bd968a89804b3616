//! `govbus schemas …` as a user runs it.
use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Output, Stdio},
};

fn govbus(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_govbus"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../bus-schemas/golden")
        .join(name)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `list` prints 25 lines: full name, 16-hex fingerprint in wire order, field count.
#[test]
fn list_prints_every_record_type() {
    let out = govbus(&["schemas", "list"], b"");
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), 25);
    let household = lines
        .iter()
        .find(|l| l.starts_with("gov.gz.police.HouseholdRegistration "))
        .unwrap();
    let cols: Vec<_> = household.split_whitespace().collect();
    let body = std::fs::read(golden("gov.gz.police.HouseholdRegistration.bin")).unwrap();
    let wire: String = body[2..10].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(cols[1], wire, "the fingerprint is printed in wire order");
    assert_eq!(&cols[2..], &["12", "fields"]);
}

/// `export` writes every record type and the shared Subject type.
#[test]
fn export_writes_every_schema() {
    let dir = tempfile::tempdir().unwrap();
    let out = govbus(&["schemas", "export", dir.path().to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 26);
    assert!(dir.path().join("gov.gz.common.Subject.avsc").exists());
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("gov.gz.civil.MarriageRegistration.avsc"))
            .unwrap(),
    )
    .unwrap();
    // Self-contained: Subject defined at its first use, referenced by full name after.
    assert_eq!(
        json["fields"][1]["type"][1]["name"],
        "gov.gz.common.Subject"
    );
    assert_eq!(json["fields"][2]["type"][1], "gov.gz.common.Subject");
}

/// `encode` then `decode` gives back the JSON; `encode` writes exactly the golden bytes.
#[test]
fn encode_decode_round_trip() {
    let json = std::fs::read(golden("gov.gz.health.BirthMedicalCertificate.json")).unwrap();
    let enc = govbus(
        &["schemas", "encode", "--type", "BirthMedicalCertificate"],
        &json,
    );
    assert!(enc.status.success(), "{}", text(&enc.stderr));
    assert_eq!(
        enc.stdout,
        std::fs::read(golden("gov.gz.health.BirthMedicalCertificate.bin")).unwrap()
    );
    let dec = govbus(&["schemas", "decode"], &enc.stdout);
    assert!(dec.status.success(), "{}", text(&dec.stderr));
    let back: serde_json::Value = serde_json::from_slice(&dec.stdout).unwrap();
    assert_eq!(
        back,
        serde_json::from_slice::<serde_json::Value>(&json).unwrap()
    );
}

/// A wrong check digit fails `validate` naming the field, without printing the number;
/// the correct number passes.
#[test]
fn validate_household_check_digit() {
    let json = text(&std::fs::read(golden("gov.gz.police.HouseholdRegistration.json")).unwrap());
    let ok = govbus(
        &["schemas", "validate", "--type", "HouseholdRegistration"],
        json.as_bytes(),
    );
    assert!(ok.status.success(), "{}", text(&ok.stdout));
    assert_eq!(
        text(&ok.stdout).trim(),
        "valid gov.gz.police.HouseholdRegistration"
    );
    let bad = json.replace("440106198001010019", "440106198001010018");
    let out = govbus(
        &["schemas", "validate", "--type", "HouseholdRegistration"],
        bad.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("invalid citizen_id_number"), "{stdout}");
    assert!(stdout.contains("gb11643-check-digit"), "{stdout}");
    assert!(
        !stdout.contains("44010619800101001"),
        "the ID number must not be echoed: {stdout}"
    );
}

/// Bad input gets a clear error naming what is wrong, and exit code 2.
#[test]
fn errors_name_the_problem() {
    let out = govbus(&["schemas", "encode", "--type", "Nope"], b"{}");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown record type `Nope`"));
    let out = govbus(
        &["schemas", "encode", "--type", "DeathCertificate"],
        br#"{"certificate_number":"x","age":"old"}"#,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("field `age`"),
        "{}",
        text(&out.stderr)
    );
    let out = govbus(&["schemas", "decode"], b"\x00\x01garbage-garbage");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("C3 01"));
    let out = govbus(&["schemas", "validate", "--type", "DeathCertificate"], b"");
    assert!(text(&out.stderr).contains("stdin is empty"));
}
