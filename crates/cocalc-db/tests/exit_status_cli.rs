//! The exit statuses each command's `--help` lists are the README's, and
//! the commands give them: a usage error exits 64 for every command.

mod common;

use common::{clean_command, run};

/// The README's table: each command with the exit statuses of its row.
fn readme_table() -> Vec<(String, Vec<u8>)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let start = readme
        .find("| command | exit statuses |")
        .expect("the README's exit status table");
    let mut rows = Vec::new();
    for line in readme[start..].lines().skip(2) {
        let Some(line) = line.strip_prefix('|') else {
            break;
        };
        let (commands, statuses) = line.split_once('|').expect("two columns");
        let statuses = codes(statuses.split(',').map(str::trim));
        for command in commands.split(',') {
            let command = command.trim().trim_matches('`');
            rows.push((command.to_owned(), statuses.clone()));
        }
    }
    rows
}

/// The numbers that begin each item, sorted.
fn codes<'a>(items: impl Iterator<Item = &'a str>) -> Vec<u8> {
    let mut codes: Vec<u8> = items
        .filter_map(|item| {
            let digits: String = item.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect();
    codes.sort_unstable();
    codes
}

/// The statuses listed under `Exit status:` in `command --help`.
fn help_codes(command: &str) -> Vec<u8> {
    let (code, out, err) = run(clean_command()
        .args(command.split_whitespace())
        .arg("--help"));
    assert_eq!(code, 0, "{command}: {err}");
    let (_, list) = out
        .split_once("Exit status:\n")
        .unwrap_or_else(|| panic!("{command} --help lists no exit status:\n{out}"));
    codes(list.lines().map(str::trim))
}

#[test]
fn every_commands_help_lists_the_readmes_exit_statuses() {
    let table = readme_table();
    let commands: Vec<&str> = table.iter().map(|(c, _)| c.as_str()).collect();
    // Every command is in the table, once.
    let (_, help, _) = run(clean_command().arg("--help"));
    let mut all = Vec::new();
    for top in [
        "check", "sql", "watch", "export", "import", "migrate", "backup", "restore",
    ] {
        assert!(
            help.contains(&format!("  {top} ")),
            "{top} in --help:\n{help}"
        );
        all.push(top.to_owned());
    }
    for sub in ["plan", "diff", "sync", "introspect"] {
        all.push(format!("schema {sub}"));
    }
    for sub in ["enable", "disable", "list", "prune"] {
        all.push(format!("feed {sub}"));
    }
    let mut sorted = commands.clone();
    sorted.sort_unstable();
    all.sort_unstable();
    assert_eq!(sorted, all);

    for (command, statuses) in &table {
        assert_eq!(&help_codes(command), statuses, "{command}");
    }
    assert_eq!(help_codes(""), vec![0, 1, 2, 64, 130, 143]);
    assert_eq!(help_codes("schema"), vec![0, 1, 2, 64]);
    assert_eq!(help_codes("feed"), vec![0, 1, 64]);
}

#[test]
fn a_usage_error_exits_64_for_every_command() {
    for (command, _) in readme_table() {
        let (code, out, err) = run(clean_command()
            .args(command.split_whitespace())
            .arg("--no-such-flag"));
        assert_eq!(code, 64, "{command}: {out}{err}");
        assert!(err.contains("--no-such-flag"), "{command}: {err}");
        assert!(out.is_empty(), "{command}: {out}");
    }
}
