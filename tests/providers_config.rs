//! Provider configuration: the complete example of docs/OPERATIONS.md (Providers) parses and builds, bad
//! fallbacks and names are refused, listings carry what `GET /api/v1/providers` shows, and the
//! defaults contain `echo` plus only the CLIs found on PATH.

use std::collections::BTreeMap;
use troupe::providers::{
    build_providers, default_provider_configs, fallbacks, provider_infos, ProviderConfig,
    ProviderConfigError, ProviderKind, SandboxMode,
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

#[test]
fn trust_and_sandbox_are_explicit_settings_checked_per_kind() {
    let parsed = toml::from_str::<ServerConfig>(
        "[providers.codex]\nkind = \"codex-cli\"\nsandbox = \"workspace-write\"\n\
         trust_project = false\n\n[providers.gemini]\nkind = \"gemini-cli\"\n\
         sandbox = \"read-only\"\n\n[providers.claude]\nkind = \"claude-cli\"\n\
         sandbox = \"full-access\"\n",
    )
    .expect("trust and sandbox parse");
    let configs = parsed.providers;
    assert_eq!(configs["codex"].sandbox, Some(SandboxMode::WorkspaceWrite));
    assert_eq!(configs["codex"].trust_project, Some(false));
    assert_eq!(configs["gemini"].trust_project, None, "unset: trusted");
    assert!(build_providers(&configs).is_ok());
    let unknown = toml::from_str::<ServerConfig>(
        "[providers.a]\nkind = \"codex-cli\"\nsandbox = \"everything\"\n",
    );
    assert!(unknown.is_err(), "only the three modes parse");
    let mut cursor = ProviderConfig::of_kind(ProviderKind::CursorCli);
    cursor.sandbox = Some(SandboxMode::ReadOnly);
    let mut http = ProviderConfig::of_kind(ProviderKind::OpenaiHttp);
    http.base_url = Some("http://127.0.0.1:1/v1".into());
    http.trust_project = Some(true);
    for (name, config) in [("cursor", cursor), ("http", http)] {
        let error = config.build(name).err().expect("refused");
        assert!(
            matches!(&error, ProviderConfigError::Unsupported { provider, .. } if provider == name),
            "{error}"
        );
    }
}
