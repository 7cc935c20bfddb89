//! Who this process is among the replicas sharing a store.

use std::fmt;
use std::sync::OnceLock;

use rand::Rng;

/// A replica's identity: `host:pid:suffix`. The host and pid tell an operator which process
/// it is; the random suffix keeps two lives of one pid (a container restarted with pid 1)
/// apart, so a restarted process never mistakes its predecessor's runs for its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplicaId(String);

impl ReplicaId {
    /// This process's identity, the same for its whole life.
    pub fn of_this_process() -> Self {
        static ID: OnceLock<ReplicaId> = OnceLock::new();
        ID.get_or_init(|| {
            let host = hostname();
            let suffix: u32 = rand::thread_rng().gen();
            ReplicaId::named(&format!("{host}:{}:{suffix:08x}", std::process::id()))
        })
        .clone()
    }

    /// An explicit identity (tests run several replicas in one process). Characters other
    /// than letters, digits and `.-_:` are replaced, so the id is safe in logs and labels.
    pub fn named(name: &str) -> Self {
        let clean: String = name
            .chars()
            .take(128)
            .map(|c| {
                if c.is_ascii_alphanumeric() || ".-_:".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        ReplicaId(clean)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The host name: `$HOSTNAME`, else the kernel's, else `unknown-host`.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "unknown-host".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_per_process_and_clean() {
        assert_eq!(ReplicaId::of_this_process(), ReplicaId::of_this_process());
        let id = ReplicaId::of_this_process();
        assert_eq!(id.as_str().matches(':').count(), 2, "{id}");
        assert!(
            id.as_str().contains(&std::process::id().to_string()),
            "{id}"
        );
        assert_eq!(ReplicaId::named("a b\n/c").as_str(), "a_b__c");
    }
}
