//! Writing results and failures.

use std::error::Error;
use std::io::{self, IsTerminal as _, Write};
use std::process::ExitCode;

/// Writes `text` to standard output. A closed pipe (`cocalc-db sql ... | head`)
/// is not an error; any other write failure is reported and fails the command.
pub(crate) fn print(command: &str, text: &str) -> ExitCode {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(command, &format!("writing the output: {e}")),
    }
}

/// Prints `cocalc-db <command>: <message>` as one line on standard error and
/// returns the failure exit code (1).
pub(crate) fn fail(command: &str, message: &str) -> ExitCode {
    note(command, message);
    ExitCode::FAILURE
}

/// Prints `cocalc-db <command>: <message>` as one line on standard error.
pub(crate) fn note(command: &str, message: &str) {
    let line = format!("cocalc-db {command}: {message}\n");
    // Nothing sensible is left to do if standard error is gone.
    let _ = io::stderr().lock().write_all(line.as_bytes());
}

/// Prints `cocalc-db <command>: target: <where>` on standard error: what a
/// command that writes is about to write to (a data directory, or a server
/// with its password redacted), before it does.
pub(crate) fn target(command: &str, config: &db::Config) {
    let (kind, place) = crate::config::location(config);
    note(command, &format!("target: {kind} {place}"));
}

/// Whether to colour what goes to standard error (the log lines), after
/// <https://no-color.org> and <https://bixense.com/clicolors/>, the
/// variables clap's own messages follow too: never when
/// `NO_COLOR` is set and not empty; always when `CLICOLOR_FORCE` is set and
/// not empty; never when `CLICOLOR=0` or `TERM=dumb`; else only on a
/// terminal. Nothing else the command prints is coloured: tables, JSON, CSV
/// and failure lines are plain text, and the progress bars have no colour.
pub(crate) fn stderr_color() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if set("NO_COLOR") {
        return false;
    }
    if set("CLICOLOR_FORCE") {
        return true;
    }
    let clicolor_off = std::env::var_os("CLICOLOR").is_some_and(|v| v == "0");
    let dumb = std::env::var_os("TERM").is_some_and(|v| v == "dumb");
    !clicolor_off && !dumb && io::stderr().is_terminal()
}

/// An error's message followed by its sources, joined by `": "`, on one line.
///
/// A source whose message the text already ends with is skipped: many
/// errors (`db::Error::Backend`, for one) already print their cause.
pub(crate) fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !part.is_empty() && !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    one_line(&text)
}

/// `text` with line breaks folded into spaces, so a failure stays one line.
fn one_line(text: &str) -> String {
    if !text.contains(['\n', '\r']) {
        return text.to_owned();
    }
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_sources_without_repeating_them() {
        let io = io::Error::new(io::ErrorKind::PermissionDenied, "denied");
        let err = db::Error::backend("opening /x", io);
        assert_eq!(error_chain(&err), "opening /x: denied");

        #[derive(Debug)]
        struct Outer(io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("outer")
            }
        }
        impl Error for Outer {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = Outer(io::Error::other("inner\nsecond line"));
        assert_eq!(error_chain(&err), "outer: inner second line");
    }
}
