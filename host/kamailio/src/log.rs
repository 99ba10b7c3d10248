//! The host's `tracing` events written through Kamailio's own log (`LM_*`), so that an
//! operator reads the policy's failures where Kamailio's are, with Kamailio's levels.

use std::io::{self, Write};
use std::sync::OnceLock;
use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

/// Kamailio's log levels (`L_ERR` .. `L_DBG`), as the C side's callback takes them.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Err = -1,
    Warn = 0,
    Notice = 1,
    Info = 2,
    Debug = 3,
}

/// The C side's logger: one call per line, not NUL-terminated.
pub type LogFn = extern "C" fn(level: LogLevel, text: *const u8, len: usize);

static SINK: OnceLock<LogFn> = OnceLock::new();

/// Sends `tracing` to `sink` from now on, in this process and the ones it forks. Info and
/// above only: the host's debug spans (one per call, formatted) cost a worker CPU on
/// every call; `RUST_LOG` turns them on for a diagnosis.
pub fn install(sink: LogFn) {
    if SINK.set(sink).is_err() {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "cvw=info,cvw_kamailio=info".into()),
        )
        .with_writer(KamailioLog)
        .with_ansi(false)
        .with_level(false)
        .without_time()
        .with_target(false)
        .try_init();
}

/// Writes `text` at `level` (for the module's own messages).
pub fn line(level: LogLevel, text: &str) {
    if let Some(sink) = SINK.get() {
        sink(level, text.as_ptr(), text.len());
    }
}

#[derive(Clone, Copy)]
struct KamailioLog;

/// One formatted event, sent as one line when the formatter is done with it.
struct Line {
    level: LogLevel,
    text: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        while self.text.last() == Some(&b'\n') {
            self.text.pop();
        }
        if let Some(sink) = SINK.get() {
            sink(self.level, self.text.as_ptr(), self.text.len());
        }
    }
}

impl<'a> MakeWriter<'a> for KamailioLog {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            level: LogLevel::Info,
            text: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        let level = match *meta.level() {
            Level::ERROR => LogLevel::Err,
            Level::WARN => LogLevel::Warn,
            Level::INFO => LogLevel::Info,
            _ => LogLevel::Debug,
        };
        Line {
            level,
            text: Vec::new(),
        }
    }
}
