//! The module's parameters (`modparam("cvw", ...)`), checked once in `mod_init` so that a
//! mistake stops Kamailio at start with the parameter's name, not at the first call.

use cvw::policy::model::Reply;
use cvw::policy::{FailureMode, RuntimeSettings};
use std::path::PathBuf;
use std::time::Duration;

/// What `modparam` set, as text (Kamailio passes strings and integers).
#[derive(Debug, Clone, Default)]
pub struct RawParams {
    pub policy: String,
    pub directory: String,
    pub failure_mode: String,
    pub deadline_ms: i64,
    pub memory_mb: i64,
    pub work_dir: String,
    pub call_log: String,
}

/// The checked parameters.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The policy component, the same file `cvw serve` loads (`[policy] module`).
    pub policy: PathBuf,
    /// The directory of users, the same file as `cvw serve`'s `directory`.
    pub directory: PathBuf,
    /// Where compiled generations are kept for the workers to map.
    pub work_dir: PathBuf,
    pub runtime: RuntimeSettings,
    /// JSON-lines file of forked calls (CVW-50), the same format as `cvw serve`'s.
    pub call_log: Option<PathBuf>,
}

/// The epoch tick of the runtime in each Kamailio process.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("modparam(\"cvw\", \"{0}\") is required")]
    Missing(&'static str),
    #[error("modparam(\"cvw\", \"failure_mode\"): {0:?} is neither \"open\" nor \"closed\"")]
    FailureMode(String),
    #[error("modparam(\"cvw\", \"{name}\"): {value} is outside {min}..={max}")]
    Range {
        name: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
}

impl RawParams {
    pub fn check(&self) -> Result<Settings, SettingsError> {
        let required = |name, value: &str| {
            if value.is_empty() {
                Err(SettingsError::Missing(name))
            } else {
                Ok(PathBuf::from(value))
            }
        };
        // Kamailio forks after mod_init compiled the policy: no compile thread pool. Every
        // worker has its own epoch thread: 5 ms ticks wake each five times less (the
        // deadline's resolution is still a quarter of the default deadline).
        let mut runtime = RuntimeSettings {
            parallel_compile: false,
            epoch_tick: EPOCH_TICK,
            ..RuntimeSettings::default()
        };
        runtime.failure_mode = match self.failure_mode.as_str() {
            "" | "open" => FailureMode::Open,
            // The same answer as `cvw serve`'s closed mode without a configured reply.
            "closed" => FailureMode::Closed(Reply {
                code: 503,
                reason: "Call via Work unavailable".into(),
                headers: vec![],
            }),
            other => return Err(SettingsError::FailureMode(other.to_owned())),
        };
        if self.deadline_ms != 0 {
            let ms = in_range("deadline_ms", self.deadline_ms, 1, 10_000)?;
            runtime.deadline = Duration::from_millis(ms);
        }
        if self.memory_mb != 0 {
            let mb = in_range("memory_mb", self.memory_mb, 1, 1024)?;
            runtime.memory_limit_bytes = usize::try_from(mb << 20).unwrap_or(usize::MAX);
        }
        Ok(Settings {
            policy: required("policy", &self.policy)?,
            directory: required("directory", &self.directory)?,
            work_dir: required("work_dir", &self.work_dir)?,
            runtime,
            call_log: (!self.call_log.is_empty()).then(|| PathBuf::from(&self.call_log)),
        })
    }
}

fn in_range(name: &'static str, value: i64, min: i64, max: i64) -> Result<u64, SettingsError> {
    if (min..=max).contains(&value) {
        Ok(value.unsigned_abs())
    } else {
        Err(SettingsError::Range {
            name,
            value,
            min,
            max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawParams {
        RawParams {
            policy: "/etc/cvw/policy.wasm".into(),
            directory: "/etc/cvw/directory.toml".into(),
            work_dir: "/run/kamailio/cvw".into(),
            ..RawParams::default()
        }
    }

    #[test]
    fn defaults_are_the_hosts_own_but_compile_on_one_thread() {
        let s = raw().check().unwrap();
        assert_eq!(
            s.runtime,
            RuntimeSettings {
                parallel_compile: false,
                epoch_tick: EPOCH_TICK,
                ..RuntimeSettings::default()
            }
        );
    }

    #[test]
    fn a_mistake_names_the_parameter() {
        let e = RawParams {
            policy: String::new(),
            ..raw()
        }
        .check()
        .unwrap_err();
        assert_eq!(e.to_string(), "modparam(\"cvw\", \"policy\") is required");
        let e = RawParams {
            failure_mode: "fail".into(),
            ..raw()
        }
        .check()
        .unwrap_err();
        assert!(e.to_string().contains("\"failure_mode\""), "{e}");
        let e = RawParams {
            deadline_ms: 60_000,
            ..raw()
        }
        .check()
        .unwrap_err();
        assert!(e.to_string().contains("\"deadline_ms\"): 60000"), "{e}");
    }

    #[test]
    fn closed_mode_answers_503() {
        let s = RawParams {
            failure_mode: "closed".into(),
            ..raw()
        }
        .check()
        .unwrap();
        assert!(matches!(s.runtime.failure_mode, FailureMode::Closed(r) if r.code == 503));
    }
}
