//! The SIP request as the policy sees it: parsed once, read lazily through getters.
