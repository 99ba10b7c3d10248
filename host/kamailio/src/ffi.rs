//! The C ABI of the Rust half (declared in `c/cvw.h`). Every function catches panics (no
//! unwinding into Kamailio) and turns every failure into a return code and a log line:
//! a policy or input problem never takes a Kamailio process down.
//!
//! Return codes follow Kamailio's route functions: positive true, negative false.

use crate::answer::{self, CAnswer, KStr};
use crate::calls;
use crate::generations::{self, Store};
use crate::hooks::{self, RawContact};
use crate::log::{self, LogFn, LogLevel};
use crate::ring;
use crate::settings::RawParams;
use crate::worker;
use cvw::calllog::BranchEnd;
use cvw::decision::dialect::NativeAnswer;
use cvw::policy::PolicyHost;
use std::ffi::{c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The module parameters as C holds them (`modparam`).
#[repr(C)]
pub struct CParams {
    pub policy: KStr,
    pub directory: KStr,
    pub failure_mode: KStr,
    pub work_dir: KStr,
    pub call_log: KStr,
    pub deadline_ms: i64,
    pub memory_mb: i64,
}

/// A contact of the called user from usrloc (`cvw_contact_t`).
#[repr(C)]
pub struct CContact {
    pub uri: KStr,
    pub received: KStr,
    pub user_agent: KStr,
    pub instance: KStr,
}

/// Receives one line of an RPC answer.
pub type EmitFn = extern "C" fn(ctx: *mut c_void, text: *const u8, len: usize);

const OK: c_int = 1;
const ERROR: c_int = -1;

/// Runs `f`, turning a panic into `on_panic` and a log line.
fn guard<R>(what: &str, on_panic: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log::line(LogLevel::Err, &format!("cvw: {what} failed inside: {why}"));
            on_panic
        }
    }
}

/// # Safety
/// `s` is a valid `str` for the duration of the call.
unsafe fn text<'a>(s: KStr) -> &'a str {
    // SAFETY: the caller's promise.
    std::str::from_utf8(unsafe { s.bytes() }).unwrap_or("")
}

/// Bytes of the shared block `cvw_rs_mod_init` takes.
#[unsafe(no_mangle)]
pub extern "C" fn cvw_rs_shared_size() -> usize {
    generations::shared_size()
}

/// `mod_init`, in Kamailio's main process before it forks: checks the parameters,
/// compiles the policy once and checks it end to end (generation 1). Leaves no thread.
///
/// # Safety
/// `params` is valid for the call; `shared` is [`cvw_rs_shared_size`] zeroed bytes of
/// shared memory, 64-aligned, living as long as Kamailio.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cvw_rs_mod_init(
    params: *const CParams,
    shared: *mut u8,
    log_fn: LogFn,
) -> c_int {
    log::install(log_fn);
    guard("mod_init", ERROR, || {
        // SAFETY: the caller's promises.
        let (Some(p), false) = (unsafe { params.as_ref() }, shared.is_null()) else {
            return ERROR;
        };
        // SAFETY: as promised by the caller.
        unsafe { generations::attach(shared) };
        // SAFETY: the strings are the module's parameters, alive for the call.
        let raw = unsafe {
            RawParams {
                policy: text(p.policy).to_owned(),
                directory: text(p.directory).to_owned(),
                failure_mode: text(p.failure_mode).to_owned(),
                work_dir: text(p.work_dir).to_owned(),
                call_log: text(p.call_log).to_owned(),
                deadline_ms: p.deadline_ms,
                memory_mb: p.memory_mb,
            }
        };
        match first_generation(raw) {
            Ok(line) => {
                log::line(LogLevel::Info, &line);
                OK
            }
            Err(why) => {
                log::line(LogLevel::Err, &format!("cvw: {why}"));
                ERROR
            }
        }
    })
}

fn first_generation(raw: RawParams) -> Result<String, String> {
    let settings = raw.check().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&settings.work_dir)
        .map_err(|e| format!("work_dir {}: {e}", settings.work_dir.display()))?;
    let shared = generations::shared().ok_or("no shared memory")?;
    // This host lives only for the check: dropping it joins its epoch thread, so no
    // thread exists when Kamailio forks.
    let host = PolicyHost::new(settings.runtime.clone()).map_err(|e| format!("{e:#}"))?;
    let store = Store::new(settings.work_dir.clone());
    let record = store
        .publish(shared, &host, &settings.policy, &settings.directory)
        .map_err(|e| format!("policy {} refused at {e}", settings.policy.display()))?;
    drop(host);
    worker::set_settings(settings);
    Ok(format!(
        "cvw: policy {} (sha256 {}) checked, generation {}",
        record.policy.display(),
        record.digest,
        record.generation
    ))
}

/// `child_init` of a process that will run routes: makes its runtime now so that its
/// first call does not wait for it. `process_no` picks its status slot.
#[unsafe(no_mangle)]
pub extern "C" fn cvw_rs_child_init(process_no: c_int) -> c_int {
    guard("child_init", ERROR, || {
        worker::set_process_no(usize::try_from(process_no).unwrap_or(0));
        match worker::with(|_| ()) {
            Ok(()) => OK,
            Err(e) => {
                log::line(LogLevel::Err, &format!("cvw: {e}"));
                ERROR
            }
        }
    })
}

/// `on-request`: fills `out` (valid until this process's next call) and returns its
/// action; a negative value when the call could not be made (route without Call via Work).
///
/// # Safety
/// `msg` and `source` are valid; `contacts` points to `ncontacts` valid contacts (or is
/// null with 0); `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cvw_rs_route(
    msg: KStr,
    source: KStr,
    contacts: *const CContact,
    ncontacts: c_int,
    out: *mut CAnswer,
) -> c_int {
    guard("cvw_route", ERROR, || {
        // SAFETY: the caller's promises.
        let (msg, source) = unsafe { (msg.bytes(), text(source)) };
        let contacts = match usize::try_from(ncontacts) {
            // SAFETY: `ncontacts` valid contacts at `contacts`.
            Ok(n) if n > 0 && !contacts.is_null() => unsafe {
                std::slice::from_raw_parts(contacts, n)
            },
            _ => &[],
        };
        let raw: Vec<RawContact<'_>> = contacts
            .iter()
            // SAFETY: each contact's strings are valid for the call.
            .map(|c| unsafe {
                RawContact {
                    uri: text(c.uri),
                    received: text(c.received),
                    user_agent: text(c.user_agent),
                    instance: text(c.instance),
                }
            })
            .collect();
        // SAFETY: `out` is writable.
        unsafe { deliver(hooks::route(msg, source, &raw), out, "cvw_route") }
    })
}

/// `on-failure` for a branch labelled `label` that ended with `reply` (empty: tm's own
/// timeout) and `code`. Fills `out` like [`cvw_rs_route`].
///
/// # Safety
/// The `str`s are valid; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cvw_rs_failure(
    request: KStr,
    reply: KStr,
    code: c_int,
    label: KStr,
    out: *mut CAnswer,
) -> c_int {
    guard("cvw_failure", ERROR, || {
        // SAFETY: the caller's promises.
        let (request, reply, label) = unsafe { (request.bytes(), reply.bytes(), text(label)) };
        let code = u16::try_from(code).unwrap_or(500);
        let result = hooks::failure(request, Some(reply), code, label).map(|a| (a, None));
        // SAFETY: `out` is writable.
        unsafe { deliver(result, out, "cvw_failure") }
    })
}

/// The next target of a serial fork from what the transaction kept; 0 when none is left.
///
/// # Safety
/// `rest` is valid; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cvw_rs_serial_next(rest: KStr, out: *mut CAnswer) -> c_int {
    guard("cvw_serial_next", ERROR, || {
        // SAFETY: the caller's promise.
        match hooks::serial_next(unsafe { rest.bytes() }) {
            Ok(None) => 0,
            // SAFETY: `out` is writable.
            Ok(Some(next)) => unsafe { deliver(Ok((next, None)), out, "cvw_failure") },
            Err(e) => {
                log::line(LogLevel::Err, &format!("cvw: {e}"));
                ERROR
            }
        }
    })
}

/// `on-reply` for a provisional reply of branch `label`: 1 to cancel the branch, -1 to
/// let it ring, -2 when the call could not be made.
///
/// # Safety
/// The `str`s are valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cvw_rs_reply(request: KStr, reply: KStr, label: KStr) -> c_int {
    guard("cvw_reply", -2, || {
        // SAFETY: the caller's promises.
        let (request, reply, label) = unsafe { (request.bytes(), reply.bytes(), text(label)) };
        match hooks::reply(request, reply, label) {
            Ok(true) => 1,
            Ok(false) => -1,
            Err(e) => {
                log::line(LogLevel::Warn, &format!("cvw: reply hook not run: {e}"));
                -2
            }
        }
    })
}

/// `cvw.swap FILE` (or `cvw.reload` with an empty `path`: the current generation's file
/// and the directory read again): compiles and checks here, then every worker switches at
/// its next request. Emits one line saying what happened.
///
/// # Safety
/// `path` is valid; `emit` may be called with `ctx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cvw_rs_swap(path: KStr, emit: EmitFn, ctx: *mut c_void) -> c_int {
    guard("cvw.swap", ERROR, || {
        // SAFETY: the caller's promise.
        let path = unsafe { text(path) }.to_owned();
        let say = |line: &str| emit(ctx, line.as_ptr(), line.len());
        match crate::control::swap((!path.is_empty()).then_some(path.as_str())) {
            Ok(line) => {
                log::line(LogLevel::Info, &line);
                say(&line);
                OK
            }
            Err(line) => {
                log::line(LogLevel::Err, &line);
                say(&line);
                ERROR
            }
        }
    })
}

/// `cvw.status`: the shared generation, its module, and each process's generation.
#[unsafe(no_mangle)]
pub extern "C" fn cvw_rs_status(emit: EmitFn, ctx: *mut c_void) -> c_int {
    guard("cvw.status", ERROR, || {
        for line in crate::control::status() {
            emit(ctx, line.as_ptr(), line.len());
        }
        OK
    })
}

/// One branch of a forked call as tm ended it (`cvw_leg_t`).
#[repr(C)]
pub struct CLeg {
    pub uri: KStr,
    /// Its final status; 0 when it got none.
    pub code: c_int,
}

/// The final response `final_code` of the call `note` (from `cvw_answer.call_note`) went
/// to the caller. 0: logged; 1: connected, its record in progress written to `partial`
/// (valid until this process's next call) for [`cvw_rs_call_ended`]; -1: not logged.
///
/// # Safety
/// `note` is valid; `legs` points to `nlegs` valid legs (or is null with 0); `partial` is
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cvw_rs_call_final(
    note: KStr,
    final_code: c_int,
    legs: *const CLeg,
    nlegs: c_int,
    partial: *mut KStr,
) -> c_int {
    guard("call log", ERROR, || {
        let legs = match usize::try_from(nlegs) {
            // SAFETY: `nlegs` valid legs at `legs`.
            Ok(n) if n > 0 && !legs.is_null() => unsafe { std::slice::from_raw_parts(legs, n) },
            _ => &[],
        };
        let branches: Vec<BranchEnd> = legs
            .iter()
            // SAFETY: each leg's uri is valid for the call.
            .map(|l| BranchEnd {
                uri: unsafe { text(l.uri) }.to_owned(),
                // A provisional status is not how a branch ended: it was still ringing.
                code: u16::try_from(l.code).ok().filter(|c| *c >= 200),
            })
            .collect();
        let code = u16::try_from(final_code).unwrap_or(500);
        // SAFETY: the caller's promise.
        match calls::finished(unsafe { note.bytes() }, code, &branches) {
            Ok(None) => 0,
            Ok(Some(record)) => {
                // SAFETY: `partial` is writable.
                if let Some(out) = unsafe { partial.as_mut() } {
                    *out = answer::hold_text(record);
                }
                1
            }
            Err(e) => {
                log::line(LogLevel::Err, &format!("cvw: call record not written: {e}"));
                ERROR
            }
        }
    })
}

/// A connected call ended; `how` says how, for people. Logs its record.
///
/// # Safety
/// `partial` (from [`cvw_rs_call_final`], kept by the caller) and `how` are valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cvw_rs_call_ended(partial: KStr, how: KStr) -> c_int {
    guard("call log", ERROR, || {
        // SAFETY: the caller's promise.
        let (partial, how) = unsafe { (partial.bytes(), text(how)) };
        match calls::ended(partial, how) {
            Ok(()) => OK,
            Err(e) => {
                log::line(LogLevel::Err, &format!("cvw: call record not written: {e}"));
                ERROR
            }
        }
    })
}

/// Starts the ring timeout of branch `branch` of transaction `hash_index:label` (CVW-51):
/// 1 queued, -1 not (the queue is full: the branch rings until the transaction's timer).
#[unsafe(no_mangle)]
pub extern "C" fn cvw_rs_ring_start(
    hash_index: u32,
    label: u32,
    branch: u32,
    ring_ms: u32,
) -> c_int {
    guard("ring timeout", ERROR, || {
        let Some(shared) = generations::shared() else {
            return ERROR;
        };
        let due = ring::Due {
            at_ms: ring::now_ms() + u64::from(ring_ms),
            hash_index,
            label,
            branch,
        };
        if shared.ring.push(due) { OK } else { ERROR }
    })
}

/// The ring timeouts due now, into `out` (room for `max`): how many. Called by the
/// module's ring-timer process only.
///
/// # Safety
/// `out` has room for `max` entries.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cvw_rs_ring_due(out: *mut ring::Due, max: c_int) -> c_int {
    guard("ring timeout", 0, || {
        let (Some(shared), Ok(max)) = (generations::shared(), usize::try_from(max)) else {
            return 0;
        };
        if out.is_null() || max == 0 {
            return 0;
        }
        // SAFETY: the caller's promise.
        let out = unsafe { std::slice::from_raw_parts_mut(out, max) };
        c_int::try_from(ring::due(&shared.ring, ring::now_ms(), out)).unwrap_or(0)
    })
}

/// Called every second by the module's watcher process: publishes a new generation when
/// the policy or directory file changed. 1 when it published, 0 when nothing changed,
/// -1 when the changed files were refused (logged; not retried until they change again).
#[unsafe(no_mangle)]
pub extern "C" fn cvw_rs_watch() -> c_int {
    guard("cvw watcher", ERROR, crate::control::watch)
}

/// Writes `result` into `out` and returns its action.
///
/// # Safety
/// `out` is writable or null.
unsafe fn deliver(
    result: Result<(NativeAnswer, Option<String>), hooks::CallError>,
    out: *mut CAnswer,
    what: &str,
) -> c_int {
    // SAFETY: the caller's promise.
    let Some(out) = (unsafe { out.as_mut() }) else {
        return ERROR;
    };
    match result {
        Ok((answer, note)) => {
            *out = answer::hold(answer, note);
            out.action
        }
        Err(e) => {
            log::line(
                LogLevel::Warn,
                &format!("cvw: {what} not decided: {e}; routing without Call via Work"),
            );
            *out = CAnswer::CONTINUE;
            -2
        }
    }
}
