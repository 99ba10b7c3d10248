//! The Call-via-Work policy (stub while the logic lands).

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../wit/policy-1.0.0", world: "policy" });
}
