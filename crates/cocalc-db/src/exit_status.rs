//! The exit statuses of each command, as its `--help` lists them (the
//! README's table says the same; `tests/exit_status_cli.rs` checks both
//! against each other).
//!
//! Every command exits 0 on success, 1 on a failure it reports in one line
//! `cocalc-db <command>: <cause>` on standard error, and 64 (sysexits'
//! `EX_USAGE`, not clap's 2) on a usage error; some add their own.

/// The heading and the line for 0.
macro_rules! head {
    () => {
        "Exit status:\n  0    success\n"
    };
}

/// The line for 1.
macro_rules! failure {
    () => {
        "  1    failure, reported in one line `cocalc-db <command>: <cause>` on standard error\n"
    };
}

/// The line for 64.
macro_rules! usage {
    () => {
        "  64   usage error: a bad flag or argument (clap's message on standard error)\n"
    };
}

/// The lines for 130 and 143.
macro_rules! signals {
    () => {
        "  130  interrupted (SIGINT, Ctrl-C): no partial file is left, nothing is imported\n  143  terminated (SIGTERM): the same\n"
    };
}

/// Commands with no status of their own.
pub(crate) const PLAIN: &str = concat!(head!(), failure!(), usage!());

/// `cocalc-db sql`.
pub(crate) const SQL: &str = concat!(
    head!(),
    "  1    failure, reported in one line `cocalc-db sql: <cause>` on standard error: an error \
     from the server (`ERROR <SQLSTATE>: ...`), no connection, or a SQL file that cannot be \
     read (then nothing runs)\n",
    "  64   usage error: a bad flag or argument, SQL given both as an argument and with \
     -f, --csv with --json\n"
);

/// `cocalc-db schema plan` and `schema diff`.
pub(crate) const PLAN: &str = concat!(
    head!(),
    "       (with --expect: the plan's hash is the one given)\n",
    "  1    failure, or with --expect another hash\n",
    "  2    changes are pending (without --expect)\n",
    usage!()
);

/// `cocalc-db schema`.
pub(crate) const SCHEMA: &str = concat!(
    head!(),
    failure!(),
    "  2    `schema plan` and `schema diff`: changes are pending\n",
    usage!()
);

/// `cocalc-db watch`: stopping it is its normal end.
pub(crate) const WATCH: &str = concat!(
    head!(),
    "       (also after Ctrl-C or SIGTERM, and when the feed is disabled)\n",
    failure!(),
    usage!()
);

/// `cocalc-db export`, `migrate` and `backup`: stopped by a signal, they
/// leave no partial file behind.
pub(crate) const STOPPABLE: &str = concat!(head!(), failure!(), usage!(), signals!());

/// The whole command, for `cocalc-db --help`.
pub(crate) const ALL: &str = concat!(
    head!(),
    failure!(),
    "  2    `schema plan`, `schema diff`: changes are pending\n",
    usage!(),
    "  130  `export`, `migrate`, `backup` interrupted (SIGINT, Ctrl-C)\n",
    "  143  `export`, `migrate`, `backup` terminated (SIGTERM)\n",
    "Each command's --help lists its own."
);
