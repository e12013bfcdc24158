//! Ctrl-C and SIGTERM as events a command waits for, so that it can stop
//! cleanly: remove a partial output file, close the embedded database (whose
//! record would otherwise say it is still open).

use std::process::ExitCode;

/// The signals a command stops on, listened to from [`Shutdown::listen`]
/// on: from then on they no longer end the process at once, so a command
/// must wait for them ([`Shutdown::recv`]) while it works.
pub(crate) struct Shutdown {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

/// Which signal stopped a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// SIGINT, Ctrl-C.
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Stop {
    /// The shell's convention: 128 plus the signal's number.
    pub(crate) fn exit_code(self) -> ExitCode {
        match self {
            Stop::Interrupt => ExitCode::from(130),
            Stop::Terminate => ExitCode::from(143),
        }
    }
}

impl Shutdown {
    /// Starts listening now (a signal that comes before the first
    /// [`Shutdown::recv`] is kept for it). Must run inside the runtime.
    pub(crate) fn listen() -> Shutdown {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Shutdown {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Shutdown {}
        }
    }

    /// Waits for Ctrl-C or SIGTERM.
    pub(crate) async fn recv(&mut self) -> Stop {
        #[cfg(unix)]
        {
            async fn next(signal: Option<&mut tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = next(self.interrupt.as_mut()) => Stop::Interrupt,
                () = next(self.terminate.as_mut()) => Stop::Terminate,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Stop::Interrupt
        }
    }
}
