//! Argo CD's health script for usersync's kinds, run as Argo CD runs it: Lua 5.1
//! (Argo CD embeds gopher-lua, a Lua 5.1), with the object as the global `obj`.

use std::path::Path;

/// What the script says of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgoHealth {
    pub status: String,
    pub message: String,
}

/// The script the chart ships.
pub fn script() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/usersync/argocd/health.lua");
    std::fs::read_to_string(path).expect("the chart's health script")
}

/// The script's verdict on `obj` (an object as the API server returns it).
pub fn argocd_health(obj: &serde_json::Value) -> ArgoHealth {
    use mlua::{LuaSerdeExt, SerializeOptions};
    let lua = mlua::Lua::new();
    // Argo CD hands the object over without JSON nulls: an absent field is nil.
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let value = lua
        .to_value_with(obj, options)
        .expect("the object converts to Lua");
    lua.globals().set("obj", value).unwrap();
    let result: mlua::Table = lua
        .load(script())
        .set_name("health.lua")
        .eval()
        .unwrap_or_else(|e| panic!("the health script failed: {e}"));
    ArgoHealth {
        status: result.get("status").expect("a status"),
        message: result
            .get::<Option<String>>("message")
            .unwrap()
            .unwrap_or_default(),
    }
}
