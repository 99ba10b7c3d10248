//! Policy scenarios (CVW-53): a request, a directory and the expected decision.
