//! Graceful shutdown: the server stops accepting calls on SIGTERM or Ctrl-C and drains the
//! calls in flight before the process exits. A second signal during the drain ends the
//! process at once (someone pressing Ctrl-C again does not want to wait for the grace).

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C), and from then on exits
/// the process on the next such signal.
pub async fn signal() {
    requested().await;
    tracing::info!("shutdown requested; draining in-flight calls (signal again to stop at once)");
    tokio::spawn(async {
        requested().await;
        tracing::warn!("second shutdown signal: exiting without waiting for the drain");
        std::process::exit(130);
    });
}

async fn requested() {
    let ctrl_c = async {
        // If the handler cannot be installed we still want SIGTERM to work, so wait forever here.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
