//! Graceful shutdown: the server stops accepting calls on SIGTERM or Ctrl-C and drains the
//! calls in flight before the process exits. A second signal during the drain ends the
//! process at once (someone pressing Ctrl-C again does not want to wait for the grace), with
//! the shell's code for it: 130 for Ctrl-C (SIGINT), 143 for SIGTERM.

/// Starts listening for SIGTERM and Ctrl-C at once (call it before the server announces that
/// it listens: a signal sent right after that announcement must find it listening), and
/// returns a future that resolves when one arrives; from then on the next such signal exits
/// the process. Needs a tokio runtime.
pub fn signal() -> impl std::future::Future<Output = ()> {
    let mut first = Requests::listen();
    async move {
        first.next().await;
        // Listening for the second signal starts before the drain is announced, for the same
        // reason.
        let mut again = Requests::listen();
        tracing::info!(
            "shutdown requested; draining in-flight calls (signal again to stop at once)"
        );
        tokio::spawn(async move {
            let code = again.next().await;
            tracing::warn!("second shutdown signal: exiting without waiting for the drain");
            std::process::exit(code);
        });
    }
}

/// Listeners for Ctrl-C and SIGTERM, registered when made: a signal after that is seen.
struct Requests {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Requests {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            // A listener that cannot be installed leaves the other one working.
            Self {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Waits for the next request; the exit code a process ended by it has (128 + the
    /// signal's number).
    async fn next(&mut self) -> i32 {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = recv(&mut self.interrupt) => 130,
                () = recv(&mut self.terminate) => 143,
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            130
        }
    }
}
