//! Property tests: for every typed request and reply, at every version from 1.21 to
//! 1.38, decode(encode(x)) == x (after dropping what the version cannot carry) and the
//! decoder consumes exactly what the encoder wrote.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use common::store_dir;
use harmonia_protocol::request::*;
use harmonia_protocol::stderr::{Field, NixError, StderrMsg};
use harmonia_protocol::types::{
    Blob, ShortString, StorePathBase, UnkeyedValidPathInfo, ValidPathInfo,
};
use harmonia_protocol::{
    Encoder, NixDeserialize, NixReader, NixSerialize, ProtocolVersion, read_request,
};
use harmonia_store_path::{ContentAddress, StorePath};
use harmonia_utils_hash::{Algorithm, Hash, NarHash};
use proptest::collection::{btree_map, btree_set, vec};
use proptest::option;
use proptest::prelude::*;

const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";

fn store_path() -> impl Strategy<Value = StorePath> {
    (
        vec(0usize..32, 32),
        "[a-zA-Z0-9+_?=-][a-zA-Z0-9+._?=-]{0,40}",
    )
        .prop_map(|(h, name)| {
            let hash: String = h.into_iter().map(|i| NIX32[i] as char).collect();
            format!("{hash}-{name}").parse().unwrap()
        })
}

fn paths() -> impl Strategy<Value = BTreeSet<StorePath>> {
    btree_set(store_path(), 0..4)
}

fn nar_hash() -> impl Strategy<Value = NarHash> {
    any::<[u8; 32]>().prop_map(NarHash::from_digest)
}

fn content_address() -> impl Strategy<Value = ContentAddress> {
    (0..3u8, any::<[u8; 32]>()).prop_map(|(k, d)| {
        let h = Hash::new(Algorithm::Sha256, &d).unwrap();
        match k {
            0 => ContentAddress::Text(h),
            1 => ContentAddress::Flat(h),
            _ => ContentAddress::Recursive(h),
        }
    })
}

fn text() -> impl Strategy<Value = String> {
    ".{0,20}"
}

fn short() -> impl Strategy<Value = ShortString> {
    text().prop_map(ShortString)
}

fn unkeyed_info() -> impl Strategy<Value = UnkeyedValidPathInfo> {
    (
        option::of(store_path()),
        nar_hash(),
        paths(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        btree_set(text(), 0..3),
        option::of(content_address()),
    )
        .prop_map(
            |(
                deriver,
                nar_hash,
                references,
                registration_time,
                nar_size,
                ultimate,
                signatures,
                ca,
            )| {
                UnkeyedValidPathInfo {
                    deriver,
                    nar_hash,
                    references,
                    registration_time,
                    nar_size,
                    ultimate,
                    signatures,
                    ca,
                }
            },
        )
}

fn valid_info() -> impl Strategy<Value = ValidPathInfo> {
    (store_path(), unkeyed_info()).prop_map(|(path, info)| ValidPathInfo { path, info })
}

fn path_req() -> impl Strategy<Value = PathRequest> {
    store_path().prop_map(|path| PathRequest { path })
}

fn request(minor: u8) -> BoxedStrategy<Request> {
    let v = ProtocolVersion::new(1, minor);
    let add_to_store = if v >= ProtocolVersion::new(1, 25) {
        (short(), short(), paths(), any::<bool>())
            .prop_map(
                |(name, method_algo, references, repair)| AddToStoreRequest::Ca {
                    name,
                    method_algo,
                    references,
                    repair,
                },
            )
            .boxed()
    } else {
        (short(), any::<bool>(), any::<u64>(), short())
            .prop_map(
                |(name, fixed, recursive, hash_algo)| AddToStoreRequest::Legacy {
                    name,
                    fixed,
                    recursive,
                    hash_algo,
                },
            )
            .boxed()
    };
    let register = if v >= ProtocolVersion::new(1, 31) {
        text()
            .prop_map(RegisterDrvOutputRequest::Realisation)
            .boxed()
    } else {
        (text(), store_path())
            .prop_map(|(id, p)| RegisterDrvOutputRequest::Legacy {
                id,
                out_path: StorePathBase(p),
            })
            .boxed()
    };
    let with_ca = v >= ProtocolVersion::new(1, 22);
    let subst_infos =
        btree_map(store_path(), option::of(content_address()), 0..3).prop_map(move |mut m| {
            if !with_ca {
                m.values_mut().for_each(|ca| *ca = None);
            }
            QuerySubstitutablePathInfosRequest { paths: m }
        });
    let gated_substitute = v >= ProtocolVersion::new(1, 27);
    let drv = (
        vec((text(), text(), text(), text()), 0..3),
        paths(),
        text(),
        text(),
        vec(text(), 0..3),
        vec((text(), text()), 0..3),
    )
        .prop_map(
            |(outs, input_srcs, platform, builder, args, env)| BasicDerivation {
                outputs: outs
                    .into_iter()
                    .map(|(name, path, hash_algo, hash)| DerivationOutput {
                        name,
                        path,
                        hash_algo,
                        hash,
                    })
                    .collect(),
                input_srcs,
                platform,
                builder,
                args,
                env,
            },
        );
    prop_oneof![
        path_req().prop_map(Request::IsValidPath),
        path_req().prop_map(Request::QueryReferrers),
        add_to_store.prop_map(Request::AddToStore),
        (short(), vec(any::<u8>(), 0..100), paths()).prop_map(|(name, t, references)| {
            Request::AddTextToStore(AddTextToStoreRequest {
                name,
                text: Blob(t),
                references,
            })
        }),
        (vec(text(), 0..3), 0..3u64)
            .prop_map(|(paths, mode)| Request::BuildPaths(BuildPathsRequest { paths, mode })),
        (vec(text(), 0..3), 0..3u64).prop_map(|(paths, mode)| Request::BuildPathsWithResults(
            BuildPathsRequest { paths, mode }
        )),
        path_req().prop_map(Request::EnsurePath),
        path_req().prop_map(Request::AddTempRoot),
        text().prop_map(|path| Request::AddIndirectRoot(AddIndirectRootRequest { path })),
        Just(Request::SyncWithGC(Empty {})),
        Just(Request::FindRoots(Empty {})),
        path_req().prop_map(Request::QueryDeriver),
        (
            any::<[bool; 4]>(),
            any::<[u64; 8]>(),
            vec((short(), text()), 0..3)
        )
            .prop_map(|(b, n, overrides)| {
                Request::SetOptions(SetOptionsRequest {
                    keep_failed: b[0],
                    keep_going: b[1],
                    try_fallback: b[2],
                    verbosity: n[0],
                    max_build_jobs: n[1],
                    max_silent_time: n[2],
                    use_build_hook: n[3],
                    verbose_build: n[4],
                    log_type: n[5],
                    print_build_trace: n[6],
                    build_cores: n[7],
                    use_substitutes: b[3],
                    overrides,
                })
            }),
        (0..4u64, paths(), any::<bool>(), any::<[u64; 4]>()).prop_map(
            |(action, paths_to_delete, ignore_liveness, n)| {
                Request::CollectGarbage(CollectGarbageRequest {
                    action,
                    paths_to_delete,
                    ignore_liveness,
                    max_freed: n[0],
                    obsolete1: n[1],
                    obsolete2: n[2],
                    obsolete3: n[3],
                })
            }
        ),
        path_req().prop_map(Request::QuerySubstitutablePathInfo),
        path_req().prop_map(Request::QueryDerivationOutputs),
        Just(Request::QueryAllValidPaths(Empty {})),
        path_req().prop_map(Request::QueryPathInfo),
        path_req().prop_map(Request::QueryDerivationOutputNames),
        short().prop_map(|hash_part| Request::QueryPathFromHashPart(
            QueryPathFromHashPartRequest { hash_part }
        )),
        subst_infos.prop_map(Request::QuerySubstitutablePathInfos),
        (paths(), any::<bool>()).prop_map(move |(paths, s)| Request::QueryValidPaths(
            QueryValidPathsRequest {
                paths,
                substitute: s && gated_substitute
            }
        )),
        paths().prop_map(|paths| Request::QuerySubstitutablePaths(PathSetRequest { paths })),
        path_req().prop_map(Request::QueryValidDerivers),
        Just(Request::OptimiseStore(Empty {})),
        (any::<bool>(), any::<bool>()).prop_map(|(check_contents, repair)| Request::VerifyStore(
            VerifyStoreRequest {
                check_contents,
                repair
            }
        )),
        (store_path(), drv, 0..3u64).prop_map(|(drv_path, drv, mode)| Request::BuildDerivation(
            BuildDerivationRequest {
                drv_path,
                drv,
                mode
            }
        )),
        (store_path(), btree_set(text(), 0..3)).prop_map(|(path, signatures)| {
            Request::AddSignatures(AddSignaturesRequest { path, signatures })
        }),
        path_req().prop_map(Request::NarFromPath),
        (valid_info(), any::<bool>(), any::<bool>()).prop_map(|(info, repair, dont_check_sigs)| {
            Request::AddToStoreNar(AddToStoreNarRequest {
                info,
                repair,
                dont_check_sigs,
            })
        }),
        vec(text(), 0..3)
            .prop_map(|targets| Request::QueryMissing(QueryMissingRequest { targets })),
        path_req().prop_map(Request::QueryDerivationOutputMap),
        register.prop_map(Request::RegisterDrvOutput),
        short().prop_map(|id| Request::QueryRealisation(QueryRealisationRequest { id })),
        (any::<bool>(), any::<bool>()).prop_map(|(repair, dont_check_sigs)| {
            Request::AddMultipleToStore(AddMultipleToStoreRequest {
                repair,
                dont_check_sigs,
            })
        }),
        store_path().prop_map(|p| Request::AddBuildLog(AddBuildLogRequest {
            drv_path: StorePathBase(p)
        })),
        (store_path(), text())
            .prop_map(|(path, gc_root)| Request::AddPermRoot(AddPermRootRequest { path, gc_root })),
    ]
    .boxed()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn encode<T: NixSerialize>(minor: u8, value: &T) -> Vec<u8> {
    let mut enc = Encoder::new(ProtocolVersion::new(1, minor), store_dir());
    enc.write(value);
    enc.take_buffer()
}

/// Encodes, decodes, checks equality with `expected` and that every byte was consumed.
fn round_trip<T: NixSerialize + NixDeserialize + PartialEq + Debug>(
    minor: u8,
    value: &T,
    expected: &T,
) -> Result<(), TestCaseError> {
    let bytes = encode(minor, value);
    let mut r = NixReader::new(&bytes[..], ProtocolVersion::new(1, minor), store_dir());
    let back: T = rt()
        .block_on(r.read())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, expected);
    prop_assert!(r.into_inner().is_empty(), "bytes left over");
    Ok(())
}

fn versioned<S: Strategy>(f: impl Fn(u8) -> S) -> impl Strategy<Value = (u8, S::Value)> {
    (21u8..=38).prop_flat_map(move |m| (Just(m), f(m)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn requests_round_trip((minor, req) in versioned(request)) {
        let bytes = encode(minor, &req);
        let mut r = NixReader::new(&bytes[..], ProtocolVersion::new(1, minor), store_dir());
        let back = rt().block_on(read_request(&mut r)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, Some(req));
        prop_assert!(r.into_inner().is_empty());
    }

    #[test]
    fn path_info_replies_round_trip(minor in 21u8..=38, info in option::of(unkeyed_info()), vinfo in valid_info()) {
        round_trip(minor, &QueryPathInfoResponse(info.clone()), &QueryPathInfoResponse(info))?;
        round_trip(minor, &vinfo, &vinfo)?;
        let resp = if minor >= 25 { AddToStoreResponse::Info(Box::new(vinfo.clone())) } else { AddToStoreResponse::Path(vinfo.path.clone()) };
        round_trip(minor, &resp, &resp)?;
    }

    #[test]
    fn path_replies_round_trip(
        minor in 21u8..=38,
        set in paths(),
        opt in option::of(store_path()),
        map in btree_map(text(), option::of(store_path()), 0..4),
        roots in vec((text(), store_path()), 0..4),
        sizes in any::<(u64, u64)>(),
        b in any::<bool>(),
        s in text(),
    ) {
        round_trip(minor, &set, &set)?;
        round_trip(minor, &opt, &opt)?;
        round_trip(minor, &map, &map)?;
        round_trip(minor, &roots, &roots)?;
        round_trip(minor, &b, &b)?;
        round_trip(minor, &s, &s)?;
        round_trip(minor, &Done, &Done)?;
        round_trip(minor, &NoReply, &NoReply)?;
        let missing = QueryMissingResponse {
            will_build: set.clone(),
            will_substitute: set.clone(),
            unknown: opt.iter().cloned().collect(),
            download_size: sizes.0,
            nar_size: sizes.1,
        };
        round_trip(minor, &missing, &missing)?;
        let gc = CollectGarbageResponse { paths: map.keys().cloned().collect(), bytes_freed: sizes.0, obsolete: 0 };
        round_trip(minor, &gc, &gc)?;
        let real = if minor >= 31 {
            QueryRealisationResponse::Realisations(map.keys().cloned().collect())
        } else {
            QueryRealisationResponse::OutPaths(set.clone())
        };
        round_trip(minor, &real, &real)?;
        let subst = SubstitutablePathInfo { deriver: opt.clone(), references: set.clone(), download_size: sizes.0, nar_size: sizes.1 };
        let infos = vec![(set.iter().next().cloned().unwrap_or_else(|| roots.first().map(|r| r.1.clone()).unwrap_or_else(|| "00000000000000000000000000000000-x".parse().unwrap())), subst.clone())];
        round_trip(minor, &infos, &infos)?;
        round_trip(minor, &QuerySubstitutablePathInfoResponse(Some(subst.clone())), &QuerySubstitutablePathInfoResponse(Some(subst)))?;
    }

    #[test]
    fn build_results_round_trip(minor in 21u8..=38, n in any::<[u64; 6]>(), b in any::<bool>(), msg in text(), outs in btree_map(text(), text(), 0..3), cpu in option::of(any::<u64>())) {
        let full = BuildResult {
            status: n[0],
            error_msg: msg,
            times_built: n[1],
            is_non_deterministic: b,
            start_time: n[2],
            stop_time: n[3],
            cpu_user: OptionalMicros(cpu),
            cpu_system: OptionalMicros(Some(n[4])),
            built_outputs: outs,
        };
        // Fields newer than the version are not sent and read back as their default.
        let mut expected = full.clone();
        if minor < 29 {
            expected.times_built = 0;
            expected.is_non_deterministic = false;
            expected.start_time = 0;
            expected.stop_time = 0;
        }
        if minor < 37 {
            expected.cpu_user = OptionalMicros(None);
            expected.cpu_system = OptionalMicros(None);
        }
        if minor < 28 {
            expected.built_outputs.clear();
        }
        round_trip(minor, &full, &expected)?;
        let keyed = vec![("/nix/store/x.drv!out".to_string(), full)];
        let keyed_expected = vec![("/nix/store/x.drv!out".to_string(), expected)];
        round_trip(minor, &keyed, &keyed_expected)?;
    }

    #[test]
    fn stderr_messages_round_trip(
        minor in 21u8..=38,
        line in text(),
        id in any::<u64>(),
        n in any::<u64>(),
        fields in vec(prop_oneof![any::<u64>().prop_map(Field::Int), text().prop_map(Field::String)], 0..4),
        level in 0u64..8,
        traces in vec(text(), 0..3),
        status in any::<u64>(),
        data in vec(any::<u8>(), 0..64),
    ) {
        for msg in [
            StderrMsg::Next(line.clone()),
            StderrMsg::Read(n),
            StderrMsg::Write(data.clone()),
            StderrMsg::Last,
            StderrMsg::StartActivity { id, level, activity_type: n, text: line.clone(), fields: fields.clone(), parent: n },
            StderrMsg::StopActivity(id),
            StderrMsg::Result { id, result_type: n, fields: fields.clone() },
        ] {
            round_trip(minor, &msg, &msg)?;
        }
        let err = NixError { level, msg: line.clone(), traces: traces.clone(), exit_status: status };
        // Each side of 1.26 carries only part of an error.
        let expected = if minor >= 26 {
            NixError { exit_status: 1, ..err.clone() }
        } else {
            NixError { level: 0, traces: Vec::new(), ..err.clone() }
        };
        round_trip(minor, &StderrMsg::Error(err), &StderrMsg::Error(expected))?;
    }
}

#[test]
fn every_op_code_is_covered() {
    // Every known op code maps back to itself, and the request strategy can produce
    // every one (checked by sampling).
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut seen = BTreeMap::new();
    let mut runner = TestRunner::deterministic();
    for minor in [21u8, 30, 38] {
        let strat = request(minor);
        for _ in 0..3000 {
            let req = strat.new_tree(&mut runner).unwrap().current();
            seen.insert(req.op() as u64, req.op());
        }
    }
    for code in 0..64u64 {
        if let Some(op) = Op::from_u64(code) {
            assert_eq!(op as u64, code);
            assert!(seen.contains_key(&code), "strategy never produced {op}");
        }
    }
    assert_eq!(seen.len(), 37);
}
