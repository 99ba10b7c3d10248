//! What the runtime needs from a directory: the lookup behind the policy's `directory`
//! import, the users for `check-user`, and the policy's configuration. The directory
//! module implements it; tests and scenarios may supply their own.

use std::borrow::Cow;

use super::model::User;

/// A read-only snapshot of users and policy configuration.
pub trait DirectoryView: Send + Sync + 'static {
    /// A user by UC address or by line/callback number (numbers compare by digits).
    fn lookup(&self, address: &str) -> Option<User>;
    /// [`DirectoryView::lookup`] without the copy where the directory can lend its record:
    /// the request hook lowers the callee straight from it into the policy.
    fn lookup_ref(&self, address: &str) -> Option<Cow<'_, User>> {
        self.lookup(address).map(Cow::Owned)
    }
    /// Every user, for `check-user` when a policy or directory is published.
    fn users(&self) -> Vec<User>;
    /// The `[policy.config]` table as key/value strings, for `configure`.
    fn policy_config(&self) -> Vec<(String, String)>;
}
