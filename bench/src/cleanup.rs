//! Clean-up: everything the benchmark declared (queues, bus topologies, shovels, the shovel
//! plugin on the broker; the scale run's PostgreSQL databases) removed after its round, at the
//! end, or on drop after a failure.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context as _;
use lapin::Connection;
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions};
use lapin::types::{FieldTable, ShortString};
use lienthong_core::registry::Settings;
use lienthong_core::topology::Topology;

use crate::broker;

/// Everything the benchmark created on the broker and has not removed yet. The normal path
/// removes each thing after its round; `finish` and, failing that, `Drop` remove the rest.
pub(crate) struct Cleanup {
    pub(crate) url: String,
    pub(crate) queues: Mutex<Vec<String>>,
    pub(crate) topologies: Mutex<Vec<Settings>>,
    pub(crate) shovels: Mutex<Vec<String>>,
    /// The plugin was enabled by us; and whether the enabled-plugins file existed before.
    pub(crate) plugin: Mutex<Option<(PathBuf, bool)>>,
    /// The scale run's databases: (the server's URL, the database's URL).
    pub(crate) databases: Mutex<Vec<(String, String)>>,
}

/// Drop the databases (blocking).
pub(crate) fn drop_databases(dbs: &[(String, String)]) {
    for (server, url) in dbs {
        lienthong_testkit::pg::drop_on(server, url);
    }
}

/// Disable the shovel plugin again; remove the enabled-plugins file if we created it and it
/// lists nothing.
pub(crate) fn disable_plugin(file: &Path, existed: bool) -> Result<(), String> {
    broker::cli_blocking("rabbitmq-plugins", &["disable", broker::SHOVEL])?;
    if !existed
        && std::fs::read_to_string(file)
            .is_ok_and(|t| t.chars().filter(|c| !c.is_whitespace()).collect::<String>() == "[].")
    {
        let _ = std::fs::remove_file(file);
    }
    Ok(())
}

pub(crate) fn take<T>(m: &Mutex<Vec<T>>) -> Vec<T> {
    m.lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default()
}

pub(crate) fn forget(m: &Mutex<Vec<String>>, name: &str) {
    if let Ok(mut v) = m.lock() {
        v.retain(|n| n != name);
    }
}

impl Cleanup {
    /// Remove what is left (normal path).
    pub(crate) async fn finish(&self, conn: Option<&Connection>) -> Vec<String> {
        let mut problems = Vec::new();
        for s in take(&self.shovels) {
            if let Err(e) = broker::cli("rabbitmqctl", &["clear_parameter", "shovel", &s]).await {
                problems.push(e);
            }
        }
        if let Some(conn) = conn {
            for q in take(&self.queues) {
                if let Err(e) = delete_queue(conn, &q).await {
                    problems.push(format!("deleting queue {q}: {e}"));
                }
            }
            for t in take(&self.topologies) {
                if let Err(e) = Topology::plan(&t).delete(conn).await {
                    problems.push(format!("deleting prefix {}: {e}", t.bus.prefix));
                }
            }
        }
        let dbs = take(&self.databases);
        if !dbs.is_empty() {
            let _ = tokio::task::spawn_blocking(move || drop_databases(&dbs)).await;
        }
        let plugin = self.plugin.lock().ok().and_then(|mut p| p.take());
        if let Some((file, existed)) = plugin {
            eprintln!("disabling {} again", broker::SHOVEL);
            match tokio::task::spawn_blocking(move || disable_plugin(&file, existed)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => problems.push(e),
                Err(e) => problems.push(e.to_string()),
            }
        }
        problems
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for s in take(&self.shovels) {
            let _ = broker::cli_blocking("rabbitmqctl", &["clear_parameter", "shovel", &s]);
        }
        let queues = take(&self.queues);
        let topologies = take(&self.topologies);
        if !queues.is_empty() || !topologies.is_empty() {
            let url = self.url.clone();
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async {
                    let Ok(conn) = lienthong_core::amqp::connect(&url, "bench-cleanup").await
                    else {
                        eprintln!(
                            "cannot reach the broker to delete the benchmark's queues: {queues:?}"
                        );
                        return;
                    };
                    for q in &queues {
                        let _ = delete_queue(&conn, q).await;
                    }
                    for t in &topologies {
                        let _ = Topology::plan(t).delete(&conn).await;
                    }
                    let _ = conn.close(200, "bench cleanup".into()).await;
                });
            })
            .join();
        }
        if let Some((file, existed)) = self.plugin.lock().ok().and_then(|mut p| p.take()) {
            let _ = disable_plugin(&file, existed);
        }
        let dbs = take(&self.databases);
        if !dbs.is_empty() {
            let _ = std::thread::spawn(move || drop_databases(&dbs)).join();
        }
    }
}

pub(crate) async fn delete_queue(conn: &Connection, name: &str) -> Result<(), lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.queue_delete(ShortString::from(name), QueueDeleteOptions::default())
        .await?;
    let _ = ch.close(200, "deleted".into()).await;
    Ok(())
}

/// Messages ready and consumers of a queue (passive declare on its own channel); None when the
/// queue does not exist.
pub(crate) async fn queue_counts(conn: &Connection, name: &str) -> Option<(u32, u32)> {
    let ch = conn.create_channel().await.ok()?;
    let q = ch
        .queue_declare(
            ShortString::from(name),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .ok()?;
    let _ = ch.close(200, "counted".into()).await;
    Some((q.message_count(), q.consumer_count()))
}

pub(crate) async fn purge(conn: &Connection, name: &str) -> anyhow::Result<()> {
    let ch = conn.create_channel().await?;
    ch.queue_purge(ShortString::from(name), QueuePurgeOptions::default())
        .await
        .with_context(|| format!("purging {name}"))?;
    let _ = ch.close(200, "purged".into()).await;
    Ok(())
}
