//! A [`Forwarder`] that times another one: [`Timed`] passes every call through unchanged and
//! records how long each install and removal took in [`Metrics`] (the kernel's own time:
//! measured inside the forwarder's lock, not the wait for it). Wrapped once around the daemon's
//! forwarder, so no caller changes.

use std::sync::Arc;
use std::time::Instant;

use super::{DataplaneError, Errors, Forwarder, InstalledEntry, ReconcileReport, SessionEntry};
use crate::dataplane::Backend;
use crate::metrics::{DataplaneOp, Metrics};

/// `inner`, with its installs and removals timed into `metrics`.
pub struct Timed {
    inner: Box<dyn Forwarder>,
    metrics: Arc<Metrics>,
}

impl Timed {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Forwarder>, metrics: Arc<Metrics>) -> Timed {
        Timed { inner, metrics }
    }
}

impl Forwarder for Timed {
    fn kind(&self) -> Backend {
        self.inner.kind()
    }

    fn prepare(&mut self) -> Result<(), DataplaneError> {
        self.inner.prepare()
    }

    fn install(&mut self, entry: &SessionEntry) -> Result<(), DataplaneError> {
        let start = Instant::now();
        let result = self.inner.install(entry);
        self.metrics
            .dataplane_latency(DataplaneOp::Install, start.elapsed());
        result
    }

    fn refresh(&mut self, entry: &SessionEntry) -> Result<(), DataplaneError> {
        self.inner.refresh(entry)
    }

    fn remove(&mut self, entry: &SessionEntry) -> Result<(), Errors> {
        let start = Instant::now();
        let result = self.inner.remove(entry);
        self.metrics
            .dataplane_latency(DataplaneOp::Remove, start.elapsed());
        result
    }

    fn list(&mut self) -> Result<Vec<InstalledEntry>, DataplaneError> {
        self.inner.list()
    }

    fn counters(&mut self, entry: &SessionEntry) -> Result<Option<(u64, u64)>, DataplaneError> {
        self.inner.counters(entry)
    }

    fn reconcile(&mut self, live: &[uuid::Uuid]) -> Result<ReconcileReport, Errors> {
        self.inner.reconcile(live)
    }

    fn purge(&mut self) -> Result<ReconcileReport, Errors> {
        self.inner.purge()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::entry::sample_entry;
    use crate::dataplane::memory::{Call, MemoryForwarder};
    use crate::metrics::Format;

    #[derive(Debug)]
    struct Nothing;

    impl prometheus_client::collector::Collector for Nothing {
        fn encode(
            &self,
            _: prometheus_client::encoding::DescriptorEncoder,
        ) -> Result<(), std::fmt::Error> {
            Ok(())
        }
    }

    #[test]
    fn every_call_passes_through_and_installs_and_removals_are_timed() {
        let memory = MemoryForwarder::new();
        let handle = memory.handle();
        let metrics = Arc::new(Metrics::new());
        let mut timed = Timed::new(Box::new(memory), Arc::clone(&metrics));
        assert_eq!(timed.kind(), Backend::Memory);
        let entry = sample_entry();
        timed.prepare().unwrap();
        timed.install(&entry).unwrap();
        assert!(
            matches!(timed.install(&entry), Err(DataplaneError::KeyTaken { .. })),
            "a refusal is passed on (and timed)"
        );
        timed.refresh(&entry).unwrap();
        assert_eq!(timed.counters(&entry).unwrap(), None);
        assert_eq!(timed.list().unwrap().len(), 1);
        timed.remove(&entry).unwrap();
        timed.reconcile(&[]).unwrap();
        timed.purge().unwrap();
        assert_eq!(
            handle.calls(),
            vec![
                Call::Prepare,
                Call::Install(entry.id),
                Call::Install(entry.id),
                Call::Refresh(entry.id),
                Call::Counters(entry.id),
                Call::List,
                Call::Remove(entry.id),
                Call::Reconcile(vec![]),
                Call::Purge,
            ]
        );
        let text = metrics.encode(Nothing, Format::Prometheus).unwrap();
        let count = |op: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(&format!(
                        "fasp_proxy_dataplane_operation_seconds_count{{operation=\"{op}\"}} "
                    ))
                })
                .map(str::to_string)
        };
        assert_eq!(count("install").as_deref(), Some("2"), "{text}");
        assert_eq!(count("remove").as_deref(), Some("1"), "{text}");
    }
}
