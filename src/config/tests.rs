use super::*;

#[test]
fn models_are_id_equals_dir_or_a_dir_in_a_string_or_a_list() {
    let one: ModelSpec = "numbers=models/t5-numbers".parse().unwrap();
    assert_eq!((one.id(), one.path.to_str().unwrap()), ("numbers".into(), "models/t5-numbers"));
    let bare: ModelSpec = "models/t5-numbers".parse().unwrap();
    assert_eq!((bare.id(), bare.id), ("t5-numbers".to_string(), None));
    // A path with `=` in a folder name is a path.
    let odd: ModelSpec = "runs/a=b/model".parse().unwrap();
    assert_eq!(odd.id, None);
    let c: Config = toml::from_str(r#"model = ["tiny=tests/data/tiny-t5", "models/t5-numbers"]"#).unwrap();
    assert_eq!(c.model.0.iter().map(ModelSpec::id).collect::<Vec<_>>(), ["tiny", "t5-numbers"]);
    let c: Config = toml::from_str(r#"model = "models/t5-numbers""#).unwrap();
    assert_eq!(c.model, ModelList::from(PathBuf::from("models/t5-numbers")));
    let twice = Config { model: ModelList(vec![one.clone(), one]), ..Config::default() };
    assert!(twice.validate().unwrap_err().0.contains("served twice"));
    for bad in ["..", ".hidden", "", "a/b"] {
        assert!(!ModelSpec::valid_id(bad), "{bad}");
    }
}

#[test]
fn models_tables_set_per_model_keys_for_their_model_alone() {
    let text = r#"
        max_batch_size = 16
        [[models]]
        id = "numbers"
        path = "models/t5-numbers"
        [[models]]
        path = "tests/data/tiny-t5"
        max_batch_size = 4
        decode_lanes = 1
        classify_labels = ["yes", "no"]
    "#;
    let c: Config = toml::from_str(text).unwrap();
    c.validate().unwrap();
    let [numbers, tiny] = c.model.0.as_slice() else { panic!("{:?}", c.model) };
    assert_eq!((numbers.id(), tiny.id()), ("numbers".to_string(), "tiny-t5".to_string()));
    let n = c.for_model(numbers).unwrap();
    assert_eq!((n.max_batch_size, n.decode_lanes, n.classify_labels.len()), (16, 0, 0), "the process's values");
    let t = c.for_model(tiny).unwrap();
    assert_eq!((t.max_batch_size, t.decode_lanes), (4, 1));
    assert_eq!(t.classify_labels, ["yes", "no"]);
    assert_eq!((t.port, t.model.0[0].path.to_str()), (c.port, Some("tests/data/tiny-t5")));
    // The tables round-trip through serialization (the per-model config is derived that way).
    let again: Config = toml::Table::try_from(&c).unwrap().try_into().unwrap();
    assert_eq!(again, c);

    // A key that is the process's alone, a bad value, an unknown key: named, with the model.
    let bad = |table: &str| {
        let c: Config = toml::from_str(&format!("[[models]]\npath = \"m\"\n{table}")).unwrap();
        c.validate().unwrap_err().0
    };
    let e = bad("port = 1");
    assert!(e.contains("model \"m\": port cannot be set for one model") && e.contains("max_batch_size"), "{e}");
    let e = bad("max_batch_size = 0");
    assert!(e.contains("model \"m\": max_batch_size = 0 is out of range"), "{e}");
    let e = bad("max_batch_size = \"many\"");
    assert!(e.contains("model \"m\"") && e.contains("invalid type"), "{e}");
    assert!(toml::from_str::<Config>("model = \"a\"\n[[models]]\npath = \"b\"").is_err(), "model and models");
    let e = toml::from_str::<Config>("[[models]]\nid = \"a\"").unwrap_err().to_string();
    assert!(e.contains("models[0]: missing field `path`"), "{e}");
    assert!(PER_MODEL_KEYS.contains(&"max_batch_memory_mb") && !PER_MODEL_KEYS.contains(&"api_key"));
}

#[test]
fn file_values_are_overridden_by_flags() {
    let mut c: Config = toml::from_str("port = 9000\nhost = \"0.0.0.0\"").unwrap();
    assert_eq!(c.port, 9000);
    c.apply(&Overrides { port: Some(9100), ..Default::default() });
    assert_eq!((c.host.as_str(), c.port), ("0.0.0.0", 9100));
}

#[test]
fn unknown_keys_are_rejected() {
    assert!(toml::from_str::<Config>("prot = 1").is_err());
}

#[test]
fn validate_names_the_key() {
    let c = Config { default_max_new_tokens: 1000, max_new_tokens_limit: 512, ..Default::default() };
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("default_max_new_tokens"), "{e}");
}

/// The shipped file states the built-in defaults: neither can change without the other.
#[test]
fn shipped_default_file_is_the_built_in_default() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml");
    assert_eq!(Config::from_file(Path::new(path)).unwrap(), Config::default());
    // And it names every key (set, or commented out where unset is the default).
    let text = std::fs::read_to_string(path).unwrap();
    let defaults = serde_json::to_value(Config::default()).unwrap();
    for key in defaults.as_object().unwrap().keys() {
        assert!(text.contains(&format!("{key} =")), "config/default.toml does not mention {key}");
    }
}

/// Every key can be set by its flag (or environment variable), and the flag's help ends with
/// the built-in default.
#[test]
fn flags_override_every_key_and_show_its_default() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        o: Overrides,
    }
    let cli = Cli::try_parse_from([
        "t5serve",
        "--port",
        "1",
        "--cors-origins",
        "http://a,http://b",
        "--api-key",
        "0123456789abcdef",
        "--classify-template",
        "t: {text}",
        "--translate-pairs",
        "English:German",
        "--log-format",
        "json",
    ])
    .unwrap();
    let mut c = Config::default();
    c.apply(&cli.o);
    assert_eq!((c.port, c.cors_origins.len(), c.log_format), (1, 2, LogFormat::Json));
    assert_eq!(c.api_key, Some(Secret("0123456789abcdef".into())));
    assert_eq!(c.classify_template.as_deref(), Some("t: {text}"));
    assert_eq!(c.translate_pairs, vec![crate::tasks::translate::LanguagePair::t5("English", "German")]);
    assert_eq!(flag_help(&[" Port to listen on."], "port"), "Port to listen on. [default: 8080]");
    assert_eq!(flag_help(&[" Origins."], "cors_origins"), "Origins. [default: none]");
    assert_eq!(flag_help(&[" Pool."], "ort_thread_pool"), "Pool. [default: global]");
}

#[test]
fn shipped_default_file_parses_and_validates() {
    let c = Config::from_file(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml"))).unwrap();
    c.validate().unwrap();
}
