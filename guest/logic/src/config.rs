//! The policy's configuration: the `[policy.config]` key/value strings handed to
//! `configure`, parsed and validated once so that the hooks only read ready values
//! (normalised numbers, precomputed URI pieces). A refusal names the key. Unknown keys are
//! returned to the caller to log, not refused: a swapped-in policy may read other keys.
//! Every key is documented with its default in `guest/README.md`.

use std::fmt;

use crate::numbers;

/// Which header names the UC user on the desk branch (CVW-30), so that the PBX's
/// missed-call and voicemail logic picks the right person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DivertHeader {
    /// RFC 7044 History-Info.
    HistoryInfo,
    /// RFC 5806 Diversion, for PBXs that predate History-Info.
    Diversion,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// CVW-2: the number every callback leg shows (normalised).
    pub global_caller_id: String,
    pub global_caller_id_display: String,
    pub pbx_domain: String,
    /// `@<pbx_domain>;user=phone`, so number URIs are built without formatting.
    pub pbx_uri_suffix: String,
    pub pbx_trunk: Option<String>,
    pub desk_ring_timeout_ms: u32,
    pub pbx_voicemail_timeout_ms: u32,
    pub client_ring_timeout_ms: Option<u32>,
    pub callback_ring_timeout_ms: u32,
    pub callee_ring_timeout_ms: u32,
    pub max_duration_s: u32,
    pub emergency_numbers: Vec<String>,
    /// How the deployment's users dial (country, prefixes, outside line): what they dial
    /// is compared in the form the PBX acts on (CVW-15).
    pub dial_plan: numbers::DialPlan,
    pub destination_allow_prefixes: Vec<String>,
    pub destination_deny_prefixes: Vec<String>,
    pub bridge_numbers: Vec<String>,
    pub pbx_voicemail_pilot: Option<String>,
    pub malicious_call_trace_codes: Vec<String>,
    pub conference_escalation_markers: Vec<String>,
    pub desk_divert_header: DivertHeader,
    pub no_answer_uri: Option<String>,
}

/// Every key this policy reads; other policies built on it may add their own.
pub const KNOWN_KEYS: &[&str] = &[
    "global_caller_id",
    "global_caller_id_display",
    "pbx_domain",
    "pbx_trunk",
    "desk_ring_timeout_ms",
    "pbx_voicemail_timeout_ms",
    "client_ring_timeout_ms",
    "callback_ring_timeout_ms",
    "callee_ring_timeout_ms",
    "max_duration_s",
    "emergency_numbers",
    "country_code",
    "national_prefix",
    "international_prefix",
    "outside_line_prefix",
    "destination_allow_prefixes",
    "destination_deny_prefixes",
    "bridge_numbers",
    "pbx_voicemail_pilot",
    "malicious_call_trace_codes",
    "conference_escalation_markers",
    "desk_divert_header",
    "no_answer_uri",
];

/// Why `configure` refused; every case names the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    Missing {
        key: &'static str,
    },
    Empty {
        key: &'static str,
    },
    NotANumber {
        key: &'static str,
        value: String,
    },
    NotAnInteger {
        key: &'static str,
        value: String,
    },
    UnknownChoice {
        key: &'static str,
        value: String,
        allowed: &'static str,
    },
    /// CVW-51: a ring timeout that lets the PBX voicemail answer first.
    RingsIntoVoicemail {
        key: &'static str,
        value: u32,
        voicemail_ms: u32,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Missing { key } => write!(f, "policy config: `{key}` is required"),
            ConfigError::Empty { key } => write!(f, "policy config: `{key}` must not be empty"),
            ConfigError::NotANumber { key, value } => {
                write!(f, "policy config: `{key}`: {value:?} is not a phone number")
            }
            ConfigError::NotAnInteger { key, value } => {
                write!(f, "policy config: `{key}`: {value:?} is not a whole number")
            }
            ConfigError::UnknownChoice {
                key,
                value,
                allowed,
            } => write!(
                f,
                "policy config: `{key}`: {value:?} is not one of {allowed}"
            ),
            ConfigError::RingsIntoVoicemail {
                key,
                value,
                voicemail_ms,
            } => write!(
                f,
                "policy config: `{key}` = {value} must be shorter than \
                 `pbx_voicemail_timeout_ms` = {voicemail_ms} (CVW-51), or the PBX voicemail \
                 answers first"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A parsed configuration and the keys it did not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub config: Config,
    pub unknown_keys: Vec<String>,
}

/// Key/value lookup over the raw pairs; the last value of a repeated key wins.
struct Raw<'a>(&'a [(String, String)]);

impl<'a> Raw<'a> {
    fn get(&self, key: &str) -> Option<&'a str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim())
    }

    fn text(&self, key: &'static str) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some("") => Err(ConfigError::Empty { key }),
            Some(v) => Ok(Some(v.to_owned())),
        }
    }

    fn required_text(&self, key: &'static str) -> Result<String, ConfigError> {
        self.text(key)?.ok_or(ConfigError::Missing { key })
    }

    fn number(&self, key: &'static str) -> Result<Option<String>, ConfigError> {
        self.get(key)
            .map(|v| {
                numbers::number(v).ok_or_else(|| ConfigError::NotANumber {
                    key,
                    value: v.to_owned(),
                })
            })
            .transpose()
    }

    fn integer(&self, key: &'static str) -> Result<Option<u32>, ConfigError> {
        self.get(key)
            .map(|v| {
                v.parse::<u32>().map_err(|_| ConfigError::NotAnInteger {
                    key,
                    value: v.to_owned(),
                })
            })
            .transpose()
    }

    /// A comma-separated list of numbers (or dialled codes with `*`/`#` when
    /// `allow_codes`); an absent key gives `default`.
    fn numbers(
        &self,
        key: &'static str,
        default: &[&str],
        allow_codes: bool,
    ) -> Result<Vec<String>, ConfigError> {
        let Some(list) = self.get(key) else {
            return Ok(default.iter().map(|s| (*s).to_owned()).collect());
        };
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                let parsed = if allow_codes {
                    numbers::dialled(item)
                } else {
                    numbers::number(item)
                };
                parsed.ok_or_else(|| ConfigError::NotANumber {
                    key,
                    value: item.to_owned(),
                })
            })
            .collect()
    }

    /// Dial digits only (a prefix such as `9` or `011`, a country code such as `44`).
    fn digits(&self, key: &'static str) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(Some(v.to_owned()))
            }
            Some(v) => Err(ConfigError::NotANumber {
                key,
                value: v.to_owned(),
            }),
        }
    }

    fn words(&self, key: &'static str, default: &[&str]) -> Vec<String> {
        match self.get(key) {
            None => default.iter().map(|s| (*s).to_owned()).collect(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

impl Config {
    /// Parse and validate `configure`'s pairs.
    pub fn parse(pairs: &[(String, String)]) -> Result<Parsed, ConfigError> {
        let raw = Raw(pairs);
        let global_caller_id = raw
            .number("global_caller_id")?
            .ok_or(ConfigError::Missing {
                key: "global_caller_id",
            })?;
        let pbx_domain = raw.required_text("pbx_domain")?;
        let mut pbx_uri_suffix = String::with_capacity(pbx_domain.len() + 12);
        pbx_uri_suffix.push('@');
        pbx_uri_suffix.push_str(&pbx_domain);
        pbx_uri_suffix.push_str(";user=phone");

        let pbx_voicemail_timeout_ms = raw.integer("pbx_voicemail_timeout_ms")?.unwrap_or(20_000);
        let below_voicemail = |key: &'static str, default: u32| -> Result<u32, ConfigError> {
            let value = raw.integer(key)?.unwrap_or(default);
            if value >= pbx_voicemail_timeout_ms {
                return Err(ConfigError::RingsIntoVoicemail {
                    key,
                    value,
                    voicemail_ms: pbx_voicemail_timeout_ms,
                });
            }
            Ok(value)
        };
        let desk_ring_timeout_ms = below_voicemail("desk_ring_timeout_ms", 15_000)?;
        let callback_ring_timeout_ms =
            below_voicemail("callback_ring_timeout_ms", desk_ring_timeout_ms)?;

        let desk_divert_header = match raw.get("desk_divert_header") {
            None => DivertHeader::HistoryInfo,
            Some(v) if v.eq_ignore_ascii_case("history-info") => DivertHeader::HistoryInfo,
            Some(v) if v.eq_ignore_ascii_case("diversion") => DivertHeader::Diversion,
            Some(v) => {
                return Err(ConfigError::UnknownChoice {
                    key: "desk_divert_header",
                    value: v.to_owned(),
                    allowed: "history-info, diversion",
                });
            }
        };

        let mut dial_plan = numbers::DialPlan::for_country(
            raw.digits("country_code")?,
            raw.digits("outside_line_prefix")?,
        );
        if let Some(prefix) = raw.digits("national_prefix")? {
            dial_plan.national_prefix = Some(prefix);
        }
        if let Some(prefix) = raw.digits("international_prefix")? {
            dial_plan.international_prefix = Some(prefix);
        }
        let emergency_default = emergency_numbers_of(dial_plan.country_code.as_deref());

        let config = Config {
            global_caller_id,
            global_caller_id_display: raw
                .text("global_caller_id_display")?
                .unwrap_or_else(|| "Call via Work".to_owned()),
            pbx_domain,
            pbx_uri_suffix,
            pbx_trunk: raw.text("pbx_trunk")?,
            desk_ring_timeout_ms,
            pbx_voicemail_timeout_ms,
            client_ring_timeout_ms: raw.integer("client_ring_timeout_ms")?,
            callback_ring_timeout_ms,
            callee_ring_timeout_ms: raw.integer("callee_ring_timeout_ms")?.unwrap_or(60_000),
            max_duration_s: raw.integer("max_duration_s")?.unwrap_or(14_400),
            emergency_numbers: raw.numbers("emergency_numbers", &emergency_default, true)?,
            dial_plan: dial_plan.clone(),
            destination_allow_prefixes: raw.numbers("destination_allow_prefixes", &[], false)?,
            destination_deny_prefixes: raw.numbers("destination_deny_prefixes", &[], false)?,
            bridge_numbers: raw.numbers("bridge_numbers", &[], false)?,
            pbx_voicemail_pilot: raw
                .number("pbx_voicemail_pilot")?
                .map(|pilot| dial_plan.canonical(&pilot)),
            malicious_call_trace_codes: raw.numbers(
                "malicious_call_trace_codes",
                &["*57"],
                true,
            )?,
            conference_escalation_markers: raw.words(
                "conference_escalation_markers",
                &["app:conf:audio-video", "app:conf:data-conf"],
            ),
            desk_divert_header,
            no_answer_uri: raw.text("no_answer_uri")?,
        };
        let unknown_keys = pairs
            .iter()
            .filter(|(k, _)| !KNOWN_KEYS.contains(&k.as_str()))
            .map(|(k, _)| k.clone())
            .collect();
        Ok(Parsed {
            config,
            unknown_keys,
        })
    }
}

/// The default emergency list: 911, 112 and 999 everywhere (a visitor dials their own),
/// plus the country's other short numbers where it has them. A wrong guess here only
/// refuses a click to call; a missing number would let one through.
fn emergency_numbers_of(country_code: Option<&str>) -> Vec<&'static str> {
    let mut list = vec!["911", "112", "999"];
    list.extend_from_slice(match country_code {
        Some("49") => &["110"],
        Some("33") => &["15", "17", "18", "114"],
        Some("61") => &["000", "106"],
        Some("64") => &["111"],
        Some("81") => &["110", "119"],
        Some("91") => &["100", "101", "102", "108"],
        _ => &[],
    });
    list
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    pub(crate) fn minimal() -> Vec<(String, String)> {
        pairs(&[
            ("global_caller_id", "+14255550000"),
            ("pbx_domain", "pbx.corp.example"),
            ("pbx_trunk", "sip:127.0.0.1:5090"),
        ])
    }

    fn with(extra: &[(&str, &str)]) -> Result<Parsed, ConfigError> {
        let mut p = minimal();
        p.extend(pairs(extra));
        Config::parse(&p)
    }

    #[test]
    fn defaults_fill_every_optional_key() {
        let c = with(&[]).unwrap().config;
        assert_eq!(c.desk_ring_timeout_ms, 15_000);
        assert_eq!(c.pbx_voicemail_timeout_ms, 20_000);
        assert_eq!(c.callback_ring_timeout_ms, 15_000);
        assert_eq!(c.emergency_numbers, ["911", "112", "999"]);
        assert_eq!(c.malicious_call_trace_codes, ["*57"]);
        assert_eq!(c.pbx_uri_suffix, "@pbx.corp.example;user=phone");
        assert_eq!(c.desk_divert_header, DivertHeader::HistoryInfo);
    }

    #[test]
    fn cvw_2_global_caller_id_is_required_and_must_be_a_number() {
        let err = Config::parse(&pairs(&[("pbx_domain", "pbx")])).unwrap_err();
        assert!(err.to_string().contains("`global_caller_id` is required"));
        let mut p = minimal();
        p.push(("global_caller_id".into(), "call-me".into()));
        let err = Config::parse(&p).unwrap_err().to_string();
        assert!(
            err.contains("`global_caller_id`") && err.contains("call-me"),
            "{err}"
        );
    }

    #[test]
    fn cvw_51_desk_ring_timeout_must_end_before_the_pbx_voicemail() {
        let err = with(&[
            ("desk_ring_timeout_ms", "20000"),
            ("pbx_voicemail_timeout_ms", "20000"),
        ])
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::RingsIntoVoicemail {
                key: "desk_ring_timeout_ms",
                ..
            }
        ));
        assert!(err.to_string().contains("CVW-51"));
        assert!(with(&[("desk_ring_timeout_ms", "19999")]).is_ok());
    }

    #[test]
    fn bad_values_name_their_key() {
        for (key, value) in [
            ("desk_ring_timeout_ms", "soon"),
            ("emergency_numbers", "911,fire"),
            ("desk_divert_header", "carrier-pigeon"),
            ("pbx_voicemail_pilot", "voicemail"),
            ("pbx_trunk", ""),
        ] {
            let err = with(&[(key, value)]).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn cvw_15_the_country_sets_its_prefixes_and_adds_its_emergency_numbers() {
        let c = with(&[("country_code", "1"), ("outside_line_prefix", "9")])
            .unwrap()
            .config;
        assert_eq!(c.dial_plan.national_prefix.as_deref(), Some("1"));
        assert_eq!(c.dial_plan.international_prefix.as_deref(), Some("011"));
        assert_eq!(c.dial_plan.outside_line.as_deref(), Some("9"));
        let de = with(&[("country_code", "49"), ("international_prefix", "000")])
            .unwrap()
            .config;
        assert_eq!(de.emergency_numbers, ["911", "112", "999", "110"]);
        assert_eq!(de.dial_plan.international_prefix.as_deref(), Some("000"));
        let err = with(&[("outside_line_prefix", "9,")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`outside_line_prefix`"), "{err}");
    }

    #[test]
    fn unknown_keys_are_reported_not_refused() {
        let parsed = with(&[("office_open", "08:00")]).unwrap();
        assert_eq!(parsed.unknown_keys, ["office_open"]);
    }

    #[test]
    fn lists_are_comma_separated_and_normalised() {
        let c = with(&[
            ("destination_deny_prefixes", "+1900, 1976 ,"),
            ("malicious_call_trace_codes", "*57,#31#"),
        ])
        .unwrap()
        .config;
        assert_eq!(c.destination_deny_prefixes, ["+1900", "1976"]);
        assert_eq!(c.malicious_call_trace_codes, ["*57", "#31#"]);
    }
}
