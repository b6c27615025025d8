//! What an operator sees when starting the binary: `--help`, and configuration errors that
//! name the variable to fix, before anything is started.

use std::process::Command;

fn frontend(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let binary = harness::binary("frontend").expect("frontend binary");
    let output = Command::new(binary)
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help_lists_every_environment_variable() {
    let (code, stdout, _) = frontend(&[], &["--help"]);
    assert_eq!(code, 0);
    for variable in [
        "PORT",
        "APPRUNNERSERVICE",
        "DBSECRETSNAME",
        "DB_HOST",
        "DB_PORT",
        "DB_NAME",
        "DB_USER",
        "DB_PASS",
        "DB_SSLMODE",
        "DB_SSLROOTCERT",
        "ECSPRIVATESERVICE",
        "TARGET",
        "TARGETPORT",
    ] {
        assert!(
            stdout.contains(&format!("[env: {variable}")),
            "--help does not mention {variable}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("verify-full when APPRUNNERSERVICE is set")
            && stdout.contains("built-in RDS CA bundle"),
        "--help says how the database is authenticated on App Runner:\n{stdout}"
    );
}

#[test]
fn invalid_configuration_exits_2_naming_the_variable() {
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("PORT", "eighty")], "PORT"),
        (&[("DB_SSLMODE", "sometimes")], "DB_SSLMODE"),
        (&[("DB_HOST", "db.internal")], "DB_USER"),
        (
            &[
                ("DBSECRETSNAME", "s"),
                ("DB_SSLMODE", "verify-full"),
                ("DB_SSLROOTCERT", "/nonexistent/ca.pem"),
            ],
            "DB_SSLROOTCERT",
        ),
        (&[("DB_STATEMENT_TIMEOUT", "soon")], "DB_STATEMENT_TIMEOUT"),
    ];
    for (env, variable) in cases {
        let (code, _, stderr) = frontend(env, &[]);
        assert_eq!(code, 2, "{env:?}: {stderr}");
        assert!(
            stderr.contains(variable),
            "{env:?}: the error does not name {variable}: {stderr}"
        );
    }
}

#[test]
fn the_password_is_never_echoed_by_help_or_errors() {
    let env = [
        ("DB_PASS", "sentinel-help-9Xw"),
        ("DB_HOST", "db"),
        ("DB_SSLMODE", "bogus"),
    ];
    let (_, stdout, stderr) = frontend(&env, &["--help"]);
    assert!(!stdout.contains("sentinel-help-9Xw") && !stderr.contains("sentinel-help-9Xw"));
    let (_, stdout, stderr) = frontend(&env, &[]);
    assert!(!stdout.contains("sentinel-help-9Xw") && !stderr.contains("sentinel-help-9Xw"));
}
