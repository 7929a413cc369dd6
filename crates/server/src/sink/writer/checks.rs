//! What the InfluxDB sink knows about InfluxDB without writing points: the
//! startup check (reachable, credentials, database; `influx.create_database`),
//! the periodic check, and the readiness `/readyz` reports.

use super::InfluxSink;
use crate::sink::health::{Cause, Readiness};
use crate::sink::influx::{Checked, WriteError};
use crate::sink::retry::{is_operator_error, is_retryable};

impl InfluxSink {
    /// Check InfluxDB without writing (see [`InfluxClient::check`]), so that
    /// `/readyz` and the log tell the truth before the first write and
    /// while no data flows. A failure starts an outage (logged once).
    pub async fn check(&self) -> Result<Checked, WriteError> {
        let r = self.client.check().await;
        match &r {
            Ok(c) => self
                .health
                .check_passed(*c == Checked::Verified, self.spooled_points()),
            Err(e) if is_retryable(e.status()) => {
                self.health
                    .failed(self.cause(e), self.spooled_points(), true)
            }
            Err(_) => {}
        }
        self.note_health();
        r
    }

    /// Run [`Self::check`] every `every` until `stop`, so an outage shows
    /// on `/readyz` (and its end in the log) while no batch is written.
    pub fn spawn_checks(
        self: &std::sync::Arc<Self>,
        every: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let sink = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.cancelled() => break,
                }
                let _ = sink.check().await;
            }
        });
    }

    /// The startup check: create the database when asked (1.x API), then
    /// [`Self::check`]. Never fails the start: devices can be spooled.
    pub async fn startup_check(&self, create_database: bool) {
        let url = self.client.base_url().to_string();
        if create_database {
            match self.client.create_database().await {
                Ok(true) => {
                    tracing::info!(%url, "influx.create_database: database exists or was created")
                }
                Ok(false) => tracing::warn!(
                    "influx.create_database applies to the 1.x API (influx.db) only; create the bucket with the influx CLI"
                ),
                Err(e) => {
                    tracing::error!(%url, error = %e, "influx.create_database: cannot create the database; create it by hand (CREATE DATABASE) or give the user the ADMIN privilege")
                }
            }
        }
        match self.check().await {
            Ok(Checked::Verified) => {
                tracing::info!(%url, "InfluxDB answers, takes the credentials and has the database")
            }
            Ok(Checked::Reachable) => {
                tracing::info!(%url, "InfluxDB answers (the token and bucket are checked by the first write)")
            }
            Err(e) if is_retryable(e.status()) => {} // logged by the health state
            Err(e) => {
                tracing::warn!(%url, error = %e, "InfluxDB startup check failed; serving anyway")
            }
        }
    }

    /// How an outage-type failure is described.
    pub(super) fn cause(&self, e: &WriteError) -> Cause {
        match e {
            WriteError::Transport { .. } => Cause::Unreachable(e.to_string()),
            WriteError::Status {
                status, message, ..
            } if is_operator_error(*status) => Cause::Misconfigured {
                status: *status,
                fix: self.client.explain(*status, message),
            },
            WriteError::Status { .. } => Cause::Failing(e.to_string()),
        }
    }

    /// What `/readyz` answers: ready while InfluxDB takes writes, or while
    /// it is unavailable (down, failing) and the spool can take a batch.
    /// Not ready while InfluxDB refuses the writer (401/403/404: it does not
    /// heal by itself; batches are still spooled), or when nothing can store
    /// a batch (InfluxDB unavailable and the spool off, full, or failing).
    pub fn readiness(&self) -> Readiness {
        let Some(outage) = self.health.outage() else {
            return Readiness {
                ready: true,
                reason: "ready: InfluxDB takes writes".into(),
            };
        };
        let since = outage.since_text();
        match &outage.cause {
            Cause::Misconfigured { fix, .. } => Readiness {
                ready: false,
                reason: format!(
                    "not ready: InfluxDB refuses every write since {since}: {fix} ({})",
                    match (&self.spool, self.no_spool) {
                        (Some(_), _) => "batches are spooled meanwhile",
                        (None, Some(note)) => note,
                        (None, None) => "batches are nacked storage_unavailable meanwhile",
                    }
                ),
            },
            Cause::Unreachable(why) | Cause::Failing(why) => {
                let spool = match &self.spool {
                    None => Err(self
                        .no_spool
                        .unwrap_or("the spool is off (spool.enabled = false)")
                        .to_string()),
                    Some(s) => {
                        let st = s.stats();
                        if self.held_points() > 0 {
                            Err(format!(
                                "the spool cannot take batches ({} points wait in memory; {} of {} bytes used{})",
                                self.held_points(),
                                st.bytes,
                                st.max_bytes,
                                if st.failing { ", appends fail" } else { "" }
                            ))
                        } else if !s.has_room(self.ready_room) {
                            Err(format!(
                                "the spool is full ({} of {} bytes)",
                                st.bytes, st.max_bytes
                            ))
                        } else {
                            Ok(format!(
                                "batches go to the spool ({} of {} bytes used)",
                                st.bytes, st.max_bytes
                            ))
                        }
                    }
                };
                match spool {
                    Ok(spooling) => Readiness {
                        ready: true,
                        reason: format!(
                            "ready: InfluxDB unavailable since {since} ({why}); {spooling}"
                        ),
                    },
                    Err(no) => Readiness {
                        ready: false,
                        reason: format!(
                            "not ready: InfluxDB unavailable since {since} ({why}) and {no}"
                        ),
                    },
                }
            }
        }
    }
}
