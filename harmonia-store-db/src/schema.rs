//! Nix's database schema (store schema 10, CA schema 3), as created by Nix 2.8.
//!
//! The statements use `if not exists` so that running them on a database Nix already made changes nothing.
//! The table and column layout must match Nix's `schema.sql` and `ca-specific-schema.sql` exactly: Nix reads
//! what we write and we read what Nix writes.

/// The store schema version Nix writes to `<db dir>/schema` for this layout.
pub const NIX_SCHEMA_VERSION: u32 = 10;

/// The CA schema version Nix 2.8 writes to `<db dir>/ca-schema` (Realisations with an `id` column and the
/// `RealisationsRefs` table).
pub const NIX_CA_SCHEMA_VERSION: u32 = 3;

/// Oldest CA schema whose tables have the layout we read and write (version 1 lacked `Realisations.id`).
pub(crate) const MIN_CA_SCHEMA_VERSION: u32 = 2;

/// `ValidPaths`, `Refs` and `DerivationOutputs` with their indexes and the self-reference trigger.
pub(crate) const STORE_SCHEMA: &str = r#"
create table if not exists ValidPaths (
    id               integer primary key autoincrement not null,
    path             text unique not null,
    hash             text not null,
    registrationTime integer not null,
    deriver          text,
    narSize          integer,
    ultimate         integer, -- null implies "false"
    sigs             text, -- space-separated
    ca               text -- if not null, an assertion that the path is content-addressed; see ValidPathInfo
);

create table if not exists Refs (
    referrer  integer not null,
    reference integer not null,
    primary key (referrer, reference),
    foreign key (referrer) references ValidPaths(id) on delete cascade,
    foreign key (reference) references ValidPaths(id) on delete restrict
);

create index if not exists IndexReferrer on Refs(referrer);
create index if not exists IndexReference on Refs(reference);

-- A self-reference (x, x) would block deleting x through "on delete restrict"; drop it first.
create trigger if not exists DeleteSelfRefs before delete on ValidPaths
  begin
    delete from Refs where referrer = old.id and reference = old.id;
  end;

create table if not exists DerivationOutputs (
    drv  integer not null,
    id   text not null, -- symbolic output id, usually "out"
    path text not null,
    primary key (drv, id),
    foreign key (drv) references ValidPaths(id) on delete cascade
);

create index if not exists IndexDerivationOutputs on DerivationOutputs(path);
"#;

/// `Realisations` and `RealisationsRefs` (CA derivations), as Nix 2.8 creates them with ca-derivations on.
pub(crate) const CA_SCHEMA: &str = r#"
create table if not exists Realisations (
    id integer primary key autoincrement not null,
    drvPath text not null,
    outputName text not null, -- symbolic output id, usually "out"
    outputPath integer not null,
    signatures text, -- space-separated list
    foreign key (outputPath) references ValidPaths(id) on delete cascade
);

create index if not exists IndexRealisations on Realisations(drvPath, outputName);

create table if not exists RealisationsRefs (
    referrer integer not null,
    realisationReference integer,
    foreign key (referrer) references Realisations(id) on delete cascade,
    foreign key (realisationReference) references Realisations(id) on delete restrict
);

create index if not exists IndexRealisationsRefs on RealisationsRefs(referrer);
create index if not exists IndexRealisationsRefsOnOutputPath on Realisations(outputPath);
"#;
