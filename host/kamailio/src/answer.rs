//! The answer the C side applies, laid out for C: every string a Kamailio `str` (pointer
//! and length) into buffers this process owns until its next hook call, so C copies
//! nothing it only reads and Rust frees nothing C still reads.

use cvw::decision::dialect::{NativeAnswer, NativeBranch};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_uint};

/// Kamailio's `str`: `{ char *s; int len; }`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct KStr {
    pub s: *const c_char,
    pub len: c_int,
}

impl KStr {
    pub const EMPTY: KStr = KStr {
        s: std::ptr::null(),
        len: 0,
    };

    /// A view of `text` (which must outlive every use of the view).
    fn of(text: &str) -> KStr {
        KStr {
            s: text.as_ptr().cast(),
            len: c_int::try_from(text.len()).unwrap_or(0),
        }
    }

    /// The bytes this `str` names; empty for a null or negative one.
    ///
    /// # Safety
    /// `s` points to `len` readable bytes for `'a`, or is null.
    pub unsafe fn bytes<'a>(self) -> &'a [u8] {
        match usize::try_from(self.len) {
            // SAFETY: the caller's promise.
            Ok(len) if !self.s.is_null() && len > 0 => unsafe {
                std::slice::from_raw_parts(self.s.cast(), len)
            },
            _ => &[],
        }
    }
}

/// What C does, as `cvw_answer.action`.
pub const CONTINUE: c_int = 0;
pub const REPLY: c_int = 1;
pub const FORK: c_int = 2;

/// One branch of a fork (`cvw_branch_t`).
#[repr(C)]
pub struct CBranch {
    pub label: KStr,
    pub uri: KStr,
    /// Empty: resolve the URI.
    pub dst_uri: KStr,
    /// CRLF-terminated header lines of this branch only.
    pub headers: KStr,
    pub from_display: KStr,
    pub from_uri: KStr,
    pub has_from: c_int,
    /// 0: no ring timeout of its own.
    pub ring_ms: c_uint,
}

/// A decision for C (`cvw_answer_t`).
#[repr(C)]
pub struct CAnswer {
    pub action: c_int,
    pub code: c_int,
    /// NUL-terminated as well (tm's `t_reply` takes a C string).
    pub reason: KStr,
    pub headers: KStr,
    pub serial: c_int,
    pub nbranches: c_int,
    pub branches: *const CBranch,
    /// A serial fork's targets after the first, for the transaction to keep (an AVP) and
    /// [`crate::ffi::cvw_rs_serial_next`] to read back in the failure route.
    pub serial_rest: KStr,
    /// A forked call's facts for its call-log record (JSON), empty without a call log:
    /// kept with the transaction and handed back to [`crate::ffi::cvw_rs_call_final`].
    pub call_note: KStr,
}

impl CAnswer {
    pub const CONTINUE: CAnswer = CAnswer {
        action: CONTINUE,
        code: 0,
        reason: KStr::EMPTY,
        headers: KStr::EMPTY,
        serial: 0,
        nbranches: 0,
        branches: std::ptr::null(),
        serial_rest: KStr::EMPTY,
        call_note: KStr::EMPTY,
    };
}

/// The owner of the last answer's bytes in this process.
#[derive(Default)]
pub struct Held {
    answer: Option<NativeAnswer>,
    reason: String,
    rest: String,
    note: String,
    branches: Vec<CBranch>,
}

thread_local! {
    static HELD: RefCell<Held> = RefCell::new(Held::default());
}

/// Keeps `answer` (and a fork's call-log `note`) until the next call and returns its C
/// view.
pub fn hold(answer: NativeAnswer, note: Option<String>) -> CAnswer {
    HELD.with_borrow_mut(|held| {
        let mut c = held.set(answer);
        held.note = note.unwrap_or_default();
        if c.action == FORK {
            c.call_note = KStr::of(&held.note);
        }
        c
    })
}

/// Keeps `text` until the next call that returns text (a call-log record in progress).
pub fn hold_text(text: String) -> KStr {
    HELD.with_borrow_mut(|held| {
        held.note = text;
        KStr::of(&held.note)
    })
}

impl Held {
    fn set(&mut self, answer: NativeAnswer) -> CAnswer {
        self.branches.clear();
        self.rest.clear();
        self.reason.clear();
        let answer = self.answer.insert(answer);
        match answer {
            NativeAnswer::Continue => CAnswer::CONTINUE,
            NativeAnswer::Reply {
                code,
                reason,
                headers,
            } => {
                self.reason.push_str(reason);
                self.reason.push('\0');
                CAnswer {
                    action: REPLY,
                    code: c_int::from(*code),
                    reason: KStr {
                        len: c_int::try_from(reason.len()).unwrap_or(0),
                        ..KStr::of(&self.reason)
                    },
                    headers: KStr::of(headers),
                    ..CAnswer::CONTINUE
                }
            }
            NativeAnswer::Fork { serial, branches } => {
                // A serial fork starts with its first target; the rest waits in the
                // transaction.
                let now = if *serial {
                    if branches.len() > 1 {
                        self.rest = serde_json::to_string(&branches[1..]).unwrap_or_default();
                    }
                    &branches[..branches.len().min(1)]
                } else {
                    &branches[..]
                };
                self.branches.extend(now.iter().map(c_branch));
                CAnswer {
                    action: FORK,
                    serial: c_int::from(*serial),
                    nbranches: c_int::try_from(self.branches.len()).unwrap_or(0),
                    branches: self.branches.as_ptr(),
                    serial_rest: KStr::of(&self.rest),
                    ..CAnswer::CONTINUE
                }
            }
        }
    }
}

fn c_branch(b: &NativeBranch) -> CBranch {
    let (display, uri) = b
        .from
        .as_ref()
        .map_or(("", ""), |(d, u)| (d.as_str(), u.as_str()));
    CBranch {
        label: KStr::of(&b.label),
        uri: KStr::of(&b.uri),
        dst_uri: KStr::of(b.dst_uri.as_deref().unwrap_or("")),
        headers: KStr::of(&b.headers),
        from_display: KStr::of(display),
        from_uri: KStr::of(uri),
        has_from: c_int::from(b.from.is_some()),
        ring_ms: b.ring_ms.unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold_plain(answer: NativeAnswer) -> CAnswer {
        hold(answer, None)
    }

    fn text(s: KStr) -> String {
        // SAFETY: views of strings held until the next `hold`.
        String::from_utf8(unsafe { s.bytes() }.to_vec()).unwrap()
    }

    fn branch(label: &str, uri: &str) -> NativeBranch {
        NativeBranch {
            label: label.into(),
            uri: uri.into(),
            ..NativeBranch::default()
        }
    }

    #[test]
    fn a_reply_reason_is_a_c_string_too() {
        let c = hold_plain(NativeAnswer::Reply {
            code: 486,
            reason: "Busy Here".into(),
            headers: String::new(),
        });
        assert_eq!(c.action, REPLY);
        assert_eq!(c.code, 486);
        assert_eq!(text(c.reason), "Busy Here");
        // SAFETY: the reason is held with a NUL after its `len` bytes.
        let z = unsafe { std::ffi::CStr::from_ptr(c.reason.s) };
        assert_eq!(z.to_str().unwrap(), "Busy Here");
    }

    #[test]
    fn a_serial_fork_hands_over_its_first_target_and_keeps_the_rest() {
        let c = hold_plain(NativeAnswer::Fork {
            serial: true,
            branches: vec![branch("voicemail", "sip:vm@pbx"), branch("x", "sip:x@pbx")],
        });
        assert_eq!((c.action, c.serial, c.nbranches), (FORK, 1, 1));
        // SAFETY: one branch, held.
        let b = unsafe { &*c.branches };
        assert_eq!(text(b.uri), "sip:vm@pbx");
        let rest: Vec<NativeBranch> = serde_json::from_str(&text(c.serial_rest)).unwrap();
        assert_eq!(rest, vec![branch("x", "sip:x@pbx")]);
    }

    #[test]
    fn a_parallel_fork_hands_over_every_branch_in_order() {
        let mut desk = branch("desk", "sip:+1@pbx");
        desk.ring_ms = Some(15000);
        desk.dst_uri = Some("sip:127.0.0.1:5090".into());
        let c = hold_plain(NativeAnswer::Fork {
            serial: false,
            branches: vec![desk, branch("client", "sip:alice@127.0.0.1:5071")],
        });
        assert_eq!((c.nbranches, c.serial), (2, 0));
        // SAFETY: two branches, held.
        let bs = unsafe { std::slice::from_raw_parts(c.branches, 2) };
        assert_eq!(text(bs[0].label), "desk");
        assert_eq!(bs[0].ring_ms, 15000);
        assert_eq!(text(bs[0].dst_uri), "sip:127.0.0.1:5090");
        assert_eq!(text(bs[1].dst_uri), "");
        assert_eq!(bs[1].ring_ms, 0);
        assert_eq!(c.serial_rest.len, 0);
    }
}
