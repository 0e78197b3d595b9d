//! Provider configuration: the complete example of docs/OPERATIONS.md (Providers) parses and builds, bad
//! fallbacks and names are refused, listings carry what `GET /api/v1/providers` shows, and the
//! defaults contain `echo` plus only the CLIs found on PATH.

use std::collections::BTreeMap;
use troupe::providers::{
    build_providers, default_provider_configs, fallbacks, provider_infos, ProviderConfig,
    ProviderConfigError, ProviderKind,
};

#[derive(serde::Deserialize)]
struct ServerConfig {
    providers: BTreeMap<String, ProviderConfig>,
}

/// The ```toml block of the "Complete example" of docs/OPERATIONS.md's providers section.
fn documented_example() -> BTreeMap<String, ProviderConfig> {
    let doc = include_str!("../docs/OPERATIONS.md");
    let section = doc
        .find("### Complete example")
        .expect("a providers example");
    let start =
        section + doc[section..].find("```toml\n").expect("a toml example") + "```toml\n".len();
    let end = start + doc[start..].find("```").expect("the example ends");
    toml::from_str::<ServerConfig>(&doc[start..end])
        .expect("the documented example parses")
        .providers
}

#[test]
fn the_documented_example_builds_and_lists() {
    let configs = documented_example();
    assert_eq!(configs.len(), 7);
    assert_eq!(configs["claude"].kind, ProviderKind::ClaudeCli);
    assert_eq!(configs["claude"].timeouts.kill_grace_ms, Some(3000));
    assert_eq!(configs["local"].kind, ProviderKind::OpenaiHttp);
    let set = build_providers(&configs).expect("the example builds");
    let infos = provider_infos(&set, &configs);
    let names: Vec<_> = infos.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "claude",
            "codex",
            "cursor",
            "echo",
            "gemini",
            "local",
            "openrouter"
        ]
    );
    let claude = &infos[0];
    assert_eq!(claude.kind, "claude-cli");
    assert!(claude.capabilities.resume && claude.capabilities.steer);
    assert_eq!(claude.model.as_deref(), Some("claude-sonnet-4-5"));
    assert_eq!(claude.fallback.as_deref(), Some("openrouter"));
    let local = infos.iter().find(|i| i.name == "local").unwrap();
    assert!(local.capabilities.stateless && local.available);
    let json = serde_json::to_value(local).unwrap();
    assert_eq!(json["capabilities"]["stateless"], true);
    assert_eq!(
        fallbacks(&configs).get("claude").map(String::as_str),
        Some("openrouter")
    );
}

#[test]
fn unknown_fallbacks_names_and_fields_are_refused() {
    let mut configs = BTreeMap::new();
    let mut echo = ProviderConfig::of_kind(ProviderKind::Echo);
    echo.fallback = Some("nowhere".into());
    configs.insert("echo".to_string(), echo.clone());
    assert!(matches!(
        build_providers(&configs),
        Err(ProviderConfigError::UnknownFallback { .. })
    ));
    echo.fallback = None;
    configs.clear();
    configs.insert("bad name".to_string(), echo);
    assert!(matches!(
        build_providers(&configs),
        Err(ProviderConfigError::InvalidName(_))
    ));
    let mut http = BTreeMap::new();
    http.insert(
        "x".to_string(),
        ProviderConfig::of_kind(ProviderKind::OpenaiHttp),
    );
    assert!(matches!(
        build_providers(&http),
        Err(ProviderConfigError::Missing {
            field: "base_url",
            ..
        })
    ));
    let typo = toml::from_str::<ServerConfig>("[providers.a]\nkind = \"echo\"\ncomand = \"x\"\n");
    assert!(typo.is_err(), "unknown fields are refused");
    let kind = toml::from_str::<ServerConfig>("[providers.a]\nkind = \"claude\"\n");
    assert!(kind.is_err(), "unknown kinds are refused");
}

#[test]
fn defaults_are_echo_and_the_clis_on_path() {
    let configs = default_provider_configs();
    assert_eq!(configs["echo"].kind, ProviderKind::Echo);
    for (name, command) in [
        ("claude", "claude"),
        ("codex", "codex"),
        ("gemini", "gemini"),
        ("cursor", "cursor-agent"),
    ] {
        let on_path = troupe::providers::process::resolve_program(command, None).is_some();
        assert_eq!(configs.contains_key(name), on_path, "{name}");
    }
    let set = troupe::providers::default_providers();
    assert!(set.get("echo").is_some());
}
