"""A non-Rust client of profiled: grpcio with code generated from proto/.

Run by tests/e2e/tests/python_client.rs, which generates the Python modules
with grpc_tools.protoc into a temporary folder, starts the real `profiled`
binary on 127.0.0.1:0 and calls:

    python client.py --gen GEN_DIR --addr 127.0.0.1:PORT --model synth --version 1

Calls GetModel, Embed, Search and Explain and checks real results, then one
bad input (INVALID_ARGUMENT naming the field). Prints one JSON line with what
it saw and exits 0; any failed check raises (non-zero exit, message on stderr).
"""

import argparse
import json
import math
import sys


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--gen", required=True, help="folder of the generated *_pb2 modules")
    p.add_argument("--addr", required=True, help="host:port of profiled")
    p.add_argument("--model", required=True)
    p.add_argument("--version", type=int, required=True)
    a = p.parse_args()

    sys.path.insert(0, a.gen)
    import grpc
    from profiled.v1 import common_pb2, embed_pb2, explain_pb2, models_pb2, search_pb2
    from profiled.v1 import service_pb2_grpc

    def check(cond: bool, what: str) -> None:
        if not cond:
            raise AssertionError(what)

    def user(occupation: str, age: float) -> common_pb2.UserFeatures:
        u = common_pb2.UserFeatures(user_id="py-user")
        u.fields["occupation"].categorical = occupation
        u.fields["age"].number = age
        u.events.add(item_id="3", timestamp=880_000_000, rating=4.0)
        u.events.add(item_id="7", timestamp=880_000_100)
        return u

    def check_model(ref, what: str) -> None:
        check(ref.name == a.model, f"{what}: model {ref.name!r} != {a.model!r}")
        check(ref.version == a.version, f"{what}: version {ref.version} != {a.version}")
        check(ref.generation_id > 0, f"{what}: generation_id {ref.generation_id}")

    seen = {}
    with grpc.insecure_channel(a.addr) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = service_pb2_grpc.ProfileServiceStub(channel)

        # GetModel: the architecture's dim is what Embed must return.
        info = stub.GetModel(models_pb2.GetModelRequest(name=a.model), timeout=10).model
        check(info.name == a.model, f"GetModel name {info.name!r}")
        ready = [v for v in info.versions if v.version == a.version]
        check(len(ready) == 1, f"GetModel has no version {a.version}: {info}")
        dim = ready[0].architecture.dim
        check(dim > 0, f"architecture.dim {dim}")
        seen["dim"] = dim

        # Embed one user by features: f32 vector of length dim, finite, unit norm.
        req = embed_pb2.EmbedRequest(encoding=common_pb2.VECTOR_ENCODING_F32)
        req.model.name = a.model
        req.users.add().features.CopyFrom(user("engineer", 34.0))
        r = stub.Embed(req, timeout=10)
        check_model(r.model, "Embed")
        check(r.dim == dim, f"Embed dim {r.dim} != model dim {dim}")
        check(len(r.users) == 1, f"Embed returned {len(r.users)} users")
        u = r.users[0]
        check(u.user_id == "py-user", f"Embed user_id {u.user_id!r}")
        check(not u.HasField("error"), f"Embed user error {u.error}")
        vec = list(u.vector.values)
        check(len(vec) == dim, f"vector length {len(vec)} != dim {dim}")
        check(all(math.isfinite(x) for x in vec), "vector has a non-finite value")
        norm = math.sqrt(sum(x * x for x in vec))
        check(abs(norm - 1.0) < 1e-3, f"vector norm {norm}")
        check(u.source == common_pb2.PROFILE_SOURCE_COMPUTED, f"source {u.source}")
        seen["norm"] = norm

        # Search the items index with the same user: k hits, best first.
        k = 5
        sreq = search_pb2.SearchRequest(target=search_pb2.TARGET_INDEX_ITEMS, k=k)
        sreq.model.name = a.model
        sreq.features.CopyFrom(user("engineer", 34.0))
        s = stub.Search(sreq, timeout=10)
        check_model(s.model, "Search")
        check(len(s.hits) == k, f"Search returned {len(s.hits)} hits, wanted {k}")
        scores = [h.score for h in s.hits]
        check(all(math.isfinite(x) for x in scores), f"non-finite score in {scores}")
        check(all(x >= y for x, y in zip(scores, scores[1:])), f"hits not sorted: {scores}")
        ids = [h.id for h in s.hits]
        check(len(set(ids)) == k and all(ids), f"hit ids {ids}")
        # The top score is the cosine of the profile with that item: recompute
        # it from a raw-vector query to tie Search to Embed.
        vreq = search_pb2.SearchRequest(target=search_pb2.TARGET_INDEX_ITEMS, k=1)
        vreq.model.name = a.model
        vreq.vector.values.extend(vec)
        top = stub.Search(vreq, timeout=10).hits
        check(len(top) == 1 and top[0].id == ids[0], f"vector query top {top} != {ids[0]}")
        seen["hits"] = ids
        seen["scores"] = scores

        # Explain the profile by occlusion: group shares sum to 1.
        ereq = explain_pb2.ExplainRequest(method=explain_pb2.EXPLAIN_METHOD_OCCLUSION, top_n=5)
        ereq.model.name = a.model
        ereq.features.CopyFrom(user("engineer", 34.0))
        ereq.target.profile.SetInParent()
        e = stub.Explain(ereq, timeout=30)
        check_model(e.model, "Explain")
        check(e.method == explain_pb2.EXPLAIN_METHOD_OCCLUSION, f"method {e.method}")
        check(len(e.groups) > 0, "Explain returned no groups")
        shares = [g.share for g in e.groups]
        check(all(0.0 <= x <= 1.0 for x in shares), f"group shares {shares}")
        check(abs(sum(shares) - 1.0) < 1e-6, f"group shares sum {sum(shares)}")
        check(0 < len(e.tokens) <= 5, f"{len(e.tokens)} tokens for top_n 5")
        check(e.forward_passes > 1, f"forward_passes {e.forward_passes}")
        seen["group_shares"] = shares

        # Bad input: NaN age is INVALID_ARGUMENT naming the field.
        bad = embed_pb2.EmbedRequest()
        bad.model.name = a.model
        bad.users.add().features.CopyFrom(user("engineer", float("nan")))
        try:
            stub.Embed(bad, timeout=10)
        except grpc.RpcError as err:
            check(
                err.code() == grpc.StatusCode.INVALID_ARGUMENT,
                f"bad input gave {err.code()}: {err.details()}",
            )
            check(
                'fields["age"]' in err.details() and "NaN" in err.details(),
                f"message does not name the problem: {err.details()!r}",
            )
            seen["bad_input"] = err.details()
        else:
            raise AssertionError("NaN age was accepted")

    print(json.dumps(seen))


if __name__ == "__main__":
    main()
