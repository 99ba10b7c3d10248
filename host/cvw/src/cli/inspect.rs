//! What a component imports and exports, as `cvw policy check` prints it. Compiles the
//! bytes with a plain engine of its own: this is about the module's shape, before the
//! policy runtime links and limits it.

use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;
use wasmtime::{Config, Engine};

/// The component's imports and exports; instance exports list their functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

impl Shape {
    pub fn of(wasm: &[u8]) -> wasmtime::Result<Self> {
        let engine = Engine::new(&Config::new())?;
        let component = Component::new(&engine, wasm)?;
        let ty = component.component_type();
        let imports = ty
            .imports(&engine)
            .map(|(name, item)| describe(&engine, name, &item.ty))
            .collect();
        let exports = ty
            .exports(&engine)
            .map(|(name, item)| describe(&engine, name, &item.ty))
            .collect();
        Ok(Shape { imports, exports })
    }

    pub fn print(&self) {
        for export in &self.exports {
            crate::say!("export:    {export}");
        }
        for import in &self.imports {
            crate::say!("import:    {import}");
        }
    }
}

fn describe(engine: &Engine, name: &str, item: &ComponentItem) -> String {
    match item {
        ComponentItem::ComponentInstance(instance) => {
            let functions: Vec<&str> = instance
                .exports(engine)
                .filter(|(_, e)| matches!(e.ty, ComponentItem::ComponentFunc(_)))
                .map(|(n, _)| n)
                .collect();
            if functions.is_empty() {
                name.to_string()
            } else {
                format!("{name} ({})", functions.join(", "))
            }
        }
        ComponentItem::ComponentFunc(_) => format!("{name} (function)"),
        _ => name.to_string(),
    }
}
