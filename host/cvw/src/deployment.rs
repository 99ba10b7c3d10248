//! The running policy and directory of `cvw serve`: [`Deployment`] is the one place that
//! publishes. Start-up, file changes (the watcher in [`crate::daemon`]) and the admin API
//! ([`crate::admin`]) all go through it, under one lock, so publishes never interleave.
//!
//! Owns what is published and from where; does not own the runtime that runs it
//! ([`crate::policy`]), nor the configuration file or the tasks that ask for a publish.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::directory::{Directory, DirectoryError};
use crate::policy::{LoadError, PolicyHost, PolicyVersion, builtin};

/// Where the policy component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    BuiltIn,
    File(PathBuf),
}

/// Why a directory reload was not published; the old directory and policy keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    Policy(#[from] LoadError),
}

/// The running policy and directory. Every publish goes through here, under one lock, so
/// a file change and a control API swap cannot interleave.
pub struct Deployment {
    host: PolicyHost,
    directory_path: PathBuf,
    directory: Mutex<Arc<Directory>>,
}

impl Deployment {
    /// Load the directory file and publish the first policy from `source`; a bad file
    /// stops start-up.
    pub fn start(
        host: PolicyHost,
        directory_path: &Path,
        source: &PolicySource,
    ) -> anyhow::Result<Self> {
        let directory = Arc::new(Directory::load(directory_path)?);
        // The runtime logs every publish; only a failure needs saying here (start-up fails).
        match source {
            PolicySource::BuiltIn => host.publish(
                builtin::default_policy()?,
                builtin::DEFAULT_ORIGIN,
                directory.clone(),
            ),
            PolicySource::File(path) => host.publish_file(path, directory.clone()),
        }?;
        Ok(Deployment {
            host,
            directory_path: directory_path.to_path_buf(),
            directory: Mutex::new(directory),
        })
    }

    pub fn host(&self) -> &PolicyHost {
        &self.host
    }

    pub fn directory_path(&self) -> &Path {
        &self.directory_path
    }

    /// Publish the module at `path` with the current directory.
    pub fn swap_file(&self, path: &Path) -> Result<PolicyVersion, LoadError> {
        let directory = self.lock();
        self.host.publish_file(path, directory.clone())
    }

    /// Publish uploaded module bytes with the current directory.
    pub fn swap_bytes(&self, wasm: &[u8], origin: &str) -> Result<PolicyVersion, LoadError> {
        let directory = self.lock();
        self.host.publish(wasm, origin, directory.clone())
    }

    /// Read the directory file again and republish the running module with it. A bad file
    /// or one the policy's `check-user` refuses leaves the old directory in place.
    pub fn reload_directory(&self) -> Result<PolicyVersion, ReloadError> {
        let mut current = self.lock();
        let fresh = Arc::new(Directory::load(&self.directory_path)?);
        let version = self.host.republish_with(fresh.clone())?;
        *current = fresh;
        Ok(version)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<Directory>> {
        // A panic while holding the lock cannot leave the Arc half-written.
        self.directory.lock().unwrap_or_else(|p| p.into_inner())
    }
}
