//! The active checks' series and records: for each address of an upstream,
//! whether the certificate it presented at the last check matches a pin, when
//! that check ran, and why checks that could not see a certificate failed.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::upstream::{unix_now, UpstreamMetrics};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct AddressLabels {
    pub(super) upstream: String,
    pub(super) address: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CheckFailureLabels {
    pub(super) upstream: String,
    pub(super) address: String,
    pub(super) reason: String,
}

/// The three families, registered once and shared by every upstream's handles.
#[derive(Clone, Debug, Default)]
pub(super) struct CheckFamilies {
    matches: Family<AddressLabels, Gauge>,
    at: Family<AddressLabels, Gauge>,
    failures: Family<CheckFailureLabels, Counter>,
}

impl CheckFamilies {
    pub(super) fn register(registry: &mut Registry) -> CheckFamilies {
        let families = CheckFamilies::default();
        registry.register(
            "upstream_certificate_matches_pin",
            "Active checks: 1 if the certificate the address presented at the last check matches a pin, 0 if it matches none (renewed, or someone in between)",
            families.matches.clone(),
        );
        registry.register(
            "upstream_check_timestamp_seconds",
            "Active checks: when the address was last checked (unix seconds), whatever the result",
            families.at.clone(),
        );
        registry.register(
            "upstream_check_failures",
            "Active checks that saw no certificate, by reason (connect-failed, timeout, handshake-failed); a certificate matching no pin is not a failure but matches_pin 0",
            families.failures.clone(),
        );
        families
    }

    pub(super) fn forget(&self, upstream: &str, address: &str) {
        let labels = AddressLabels {
            upstream: upstream.to_string(),
            address: address.to_string(),
        };
        self.matches.remove(&labels);
        self.at.remove(&labels);
    }
}

/// What the last check of one address saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRecord {
    /// When it ran (unix seconds).
    pub at: i64,
    /// The certificate the address presented at the last check that saw one.
    pub certificate: Option<CheckedCertificate>,
    /// Why the last check saw no certificate; `None` when it saw one.
    pub error: Option<String>,
}

/// A certificate an active check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedCertificate {
    /// SHA-1 of the DER certificate (what `api fingerprint` prints).
    pub sha1: [u8; 20],
    /// SHA-256 of the DER certificate.
    pub sha256: [u8; 32],
    /// Its notAfter (unix seconds), if it parses.
    pub not_after: Option<i64>,
    /// The pin it matched: its number (from 1) and its text; `None`: no pin.
    pub pin: Option<(usize, String)>,
    /// When this address was first seen presenting it (unix seconds).
    pub since: i64,
}

/// What one check found.
#[derive(Debug, Clone)]
pub enum CheckOutcome {
    /// The handshake reached the certificate (matched or not).
    Presented {
        /// SHA-1 of the DER certificate.
        sha1: [u8; 20],
        /// SHA-256 of the DER certificate.
        sha256: [u8; 32],
        /// notAfter, unix seconds.
        not_after: Option<i64>,
        /// The pin it matched, numbered from 1, with its text.
        pin: Option<(usize, String)>,
    },
    /// No certificate was seen.
    Failed {
        /// The `X-Pinproxy-Error` tag of the failure (`connect-failed`, …).
        reason: &'static str,
        /// What went wrong.
        error: String,
    },
}

impl UpstreamMetrics {
    fn address_labels(&self, address: &str) -> AddressLabels {
        AddressLabels {
            upstream: self.name.to_string(),
            address: address.to_string(),
        }
    }

    /// The last check of `address`, if one ran.
    pub fn check_record(&self, address: &str) -> Option<CheckRecord> {
        let observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        observed.checks.get(address).cloned()
    }

    /// Records one check of `address`; the record it replaces.
    pub fn checked(&self, address: &str, outcome: CheckOutcome) -> Option<CheckRecord> {
        let now = unix_now();
        let labels = self.address_labels(address);
        if let Some(families) = &self.checks {
            families.at.get_or_create(&labels).set(now);
        }
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        let previous = observed.checks.get(address).cloned();
        let record = match outcome {
            CheckOutcome::Presented {
                sha1,
                sha256,
                not_after,
                pin,
            } => {
                if let Some(families) = &self.checks {
                    families
                        .matches
                        .get_or_create(&labels)
                        .set(i64::from(pin.is_some()));
                }
                let since = previous
                    .as_ref()
                    .and_then(|p| p.certificate.as_ref())
                    .filter(|c| c.sha1 == sha1)
                    .map_or(now, |c| c.since);
                CheckRecord {
                    at: now,
                    certificate: Some(CheckedCertificate {
                        sha1,
                        sha256,
                        not_after,
                        pin,
                        since,
                    }),
                    error: None,
                }
            }
            CheckOutcome::Failed { reason, error } => {
                if let Some(families) = &self.checks {
                    families
                        .failures
                        .get_or_create(&CheckFailureLabels {
                            upstream: self.name.to_string(),
                            address: address.to_string(),
                            reason: reason.to_string(),
                        })
                        .inc();
                }
                CheckRecord {
                    at: now,
                    certificate: previous.as_ref().and_then(|p| p.certificate.clone()),
                    error: Some(error),
                }
            }
        };
        observed.checks.insert(address.to_string(), record);
        previous
    }

    /// Forgets the checks of every address not in `addresses` (a reload
    /// removed it, or turned checks off).
    pub fn keep_checks_of(&self, addresses: &[String]) {
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<String> = observed
            .checks
            .keys()
            .filter(|a| !addresses.contains(a))
            .cloned()
            .collect();
        for address in gone {
            observed.checks.remove(&address);
            if let Some(families) = &self.checks {
                families.forget(&self.name, &address);
            }
        }
    }
}
