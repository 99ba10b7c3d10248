//! What the runtime needs from a directory: the lookup behind the policy's `directory`
//! import, the users for `check-user`, and the policy's configuration. The directory
//! module implements it; tests and scenarios may supply their own.

use super::model::User;

/// A read-only snapshot of users and policy configuration.
pub trait DirectoryView: Send + Sync + 'static {
    /// A user by UC address or by line/callback number (numbers compare by digits).
    fn lookup(&self, address: &str) -> Option<User>;
    /// Every user, for `check-user` when a policy or directory is published.
    fn users(&self) -> Vec<User>;
    /// The `[policy.config]` table as key/value strings, for `configure`.
    fn policy_config(&self) -> Vec<(String, String)>;
}
