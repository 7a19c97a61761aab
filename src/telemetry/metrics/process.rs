//! The standard `process_*` series, read at each scrape (`platform::process`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The standard process metrics (as the Prometheus client libraries name
/// them), so dashboards and alerts written for any exporter work here.
#[derive(Debug)]
pub(super) struct Process {
    pub(super) resident_memory: Gauge,
    pub(super) open_fds: Gauge,
    pub(super) max_fds: Gauge,
    pub(super) cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// CPU seconds already counted, to add only what is new.
    pub(super) cpu_counted: std::sync::Mutex<f64>,
}

impl Process {
    pub(super) fn register(root: &mut Registry) -> Process {
        let process = Process {
            resident_memory: Gauge::default(),
            open_fds: Gauge::default(),
            max_fds: Gauge::default(),
            cpu_seconds: Counter::default(),
            cpu_counted: std::sync::Mutex::new(0.0),
        };
        let start = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        start.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        root.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            process.resident_memory.clone(),
        );
        root.register(
            "process_open_fds",
            "Number of open file descriptors",
            process.open_fds.clone(),
        );
        root.register(
            "process_max_fds",
            "Maximum number of open file descriptors (soft limit)",
            process.max_fds.clone(),
        );
        root.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            process.cpu_seconds.clone(),
        );
        root.register(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            start,
        );
        process
    }

    /// Reads what the system counts; a value it cannot tell keeps its last one.
    pub(super) fn refresh(&self) {
        let usage = crate::platform::process::usage();
        if let Some(bytes) = usage.resident_bytes {
            self.resident_memory.set(bytes);
        }
        if let Some(open) = usage.open_fds {
            self.open_fds.set(open);
        }
        if let Some(max) = usage.max_fds {
            self.max_fds.set(max);
        }
        if let Some(seconds) = usage.cpu_seconds {
            let mut counted = self.cpu_counted.lock().unwrap_or_else(|p| p.into_inner());
            if seconds > *counted {
                self.cpu_seconds.inc_by(seconds - *counted);
                *counted = seconds;
            }
        }
    }
}
