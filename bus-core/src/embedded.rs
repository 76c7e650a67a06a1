//! The procedure schemas compiled into the binary, for the embedded default configuration.

/// The procedure schemas compiled into the binary, by the path the shipped catalogue names them
/// with: what `data_schema` reads when the configuration is the embedded default.
pub const EMBEDDED: [(&str, &str); 4] = [
    (
        "schemas/procedures/1.001193.schema.json",
        include_str!("../../schemas/procedures/1.001193.schema.json"),
    ),
    (
        "schemas/procedures/1.011537.schema.json",
        include_str!("../../schemas/procedures/1.011537.schema.json"),
    ),
    (
        "schemas/procedures/1.010059.schema.json",
        include_str!("../../schemas/procedures/1.010059.schema.json"),
    ),
    (
        "schemas/procedures/SYN.HQ.001.schema.json",
        include_str!("../../schemas/procedures/SYN.HQ.001.schema.json"),
    ),
];

/// The compiled-in schema named `path` (as the shipped catalogue's `data_schema` names it):
/// `(path, schema text)`.
pub fn schema(path: &str) -> Option<(&'static str, &'static str)> {
    EMBEDDED.iter().find(|(p, _)| *p == path).copied()
}
