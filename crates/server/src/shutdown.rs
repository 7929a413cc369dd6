//! Shutdown signal: the first SIGINT (ctrl-c) or SIGTERM cancels the token
//! that every task watches.

use tokio_util::sync::CancellationToken;

/// Cancel `token` on SIGINT or SIGTERM.
pub fn on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
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
            _ = ctrl_c => tracing::info!("SIGINT received"),
            _ = term => tracing::info!("SIGTERM received"),
        }
        token.cancel();
    });
}
