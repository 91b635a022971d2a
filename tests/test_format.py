"""The summary format: quantization tolerance, bundle round trip, version handling."""
import json

import numpy as np
import pytest

import tb_convviz
from tb_convviz.schema import format as fmt
from tb_convviz.schema import groups
from tb_convviz.read.reader import newest_version


def test_q8_error_is_within_stated_tolerance_per_group():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 5, 3, 3)).astype(np.float32) * rng.uniform(0.01, 10, size=(16, 1, 1, 1)).astype(np.float32)
    q, lo, step = fmt.quantize(a, groups=1)
    back = fmt.dequantize(q, lo, step, 1)
    span = a.reshape(16, -1).max(1) - a.reshape(16, -1).min(1)
    err = np.abs(back - a).reshape(16, -1).max(1)
    assert np.all(err <= span / 510 + 1e-6 * np.abs(a).reshape(16, -1).max(1))


def test_bundle_round_trip_keeps_meta_and_every_encoding():
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    blob = fmt.encode_bundle(
        {
            "maps": ("q8", maps, 2),
            "stats": ("f32", np.array([1.5, -2.0], np.float32), 0),
            "labels": ("i32", np.array([3, 1, 2]), 0),
            "half": ("f16", np.array([0.5, 0.25]), 0),
        },
        {"info": {"filters": 3}},
    )
    b = fmt.decode_bundle(blob)
    assert b.meta == {"info": {"filters": 3}}
    assert sorted(b.names()) == ["half", "labels", "maps", "stats"]
    assert np.abs(b.array("maps") - maps).max() <= (maps.max() - maps.min()) / 510 + 1e-6
    np.testing.assert_array_equal(b.array("stats"), [1.5, -2.0])
    np.testing.assert_array_equal(b.array("labels"), [3, 1, 2])
    np.testing.assert_array_equal(b.array("half"), [0.5, 0.25])


def test_constant_group_and_non_finite_values_do_not_break_encoding():
    a = np.array([[2.0, 2.0, 2.0], [np.nan, 1.0, 3.0]], np.float32)
    b = fmt.decode_bundle(fmt.encode_bundle({"a": ("q8", a, 1)}, {}))
    out = b.array("a")
    np.testing.assert_allclose(out[0], [2.0, 2.0, 2.0])
    assert np.isfinite(out).all()


def test_garbage_is_rejected_with_a_clear_error():
    with pytest.raises(ValueError, match="not a convviz bundle"):
        fmt.decode_bundle(b"hello world")


@pytest.mark.parametrize(
    "content, reason",
    [
        (json.dumps({"version": fmt.FORMAT_VERSION + 1, "kind": "filters"}), "newer"),
        (json.dumps({"version": "2", "kind": "maps"}), "not an integer"),
        ("[]", "not an object"),
        ("{not json", "not JSON"),
        (json.dumps({"version": 1, "kind": "sparkles"}), "kind 'sparkles'"),
    ],
)
def test_unreadable_plugin_content_says_why(content: str, reason: str):
    with pytest.raises(ValueError, match=reason):
        fmt.parse_plugin_content(content.encode())
    assert fmt.parse_plugin_content(fmt.plugin_content("filters")) == {
        "version": fmt.FORMAT_VERSION, "kind": "filters", "stamped": True, "writer": tb_convviz.__version__,
    }


def test_records_name_their_writer_and_logs_without_it_still_read():
    assert fmt.record_origin(fmt.plugin_content("maps")) == (fmt.FORMAT_VERSION, tb_convviz.__version__)
    before = json.dumps({"version": fmt.FORMAT_VERSION, "kind": "maps", "stamped": True}).encode()  # logs from before records named their writer
    assert fmt.parse_plugin_content(before)["kind"] == "maps"
    assert fmt.record_origin(before) == (fmt.FORMAT_VERSION, None)
    future = json.dumps({"version": fmt.FORMAT_VERSION + 1, "kind": "maps", "writer": "9.0"}).encode()
    assert fmt.record_origin(future) == (fmt.FORMAT_VERSION + 1, "9.0")  # read although the record is not
    assert fmt.record_origin(b"[]") == (0, None) and fmt.record_origin(b"\xff") == (0, None)
    assert newest_version(["0.9.0", None, "0.10.0", "not a version"]) == "0.10.0"  # by release, not by text
    assert newest_version([None]) is None and newest_version([]) is None


def test_a_truncated_payload_fails_at_decode_not_at_read():
    data = fmt.encode_bundle({"a": ("f32", np.arange(8, dtype=np.float32), 0), "b": ("q8", np.ones((2, 3)), 1)}, {})
    assert fmt.decode_bundle(data).array("a")[3] == 3
    for cut in (len(data) - 1, len(data) - 30, 20):
        with pytest.raises(ValueError, match="truncated|header"):
            fmt.decode_bundle(data[:cut])


def test_tags_round_trip_with_dotted_layer_names():
    assert fmt.parse_tag(fmt.tag_for("layer1.0.conv1", "kernels")) == ("layer1.0.conv1", "kernels")
    tag = groups.group_tag("layer1.0.conv1", ["maps", "filters"])
    assert tag == "layer1.0.conv1/@filters+maps" and fmt.parse_tag(tag)[0] == "layer1.0.conv1"
    assert groups.is_group_tag(tag) and not groups.is_group_tag(fmt.tag_for("layer1.0.conv1", "maps"))


def test_a_group_holds_each_record_as_stored_and_says_when_it_is_not_whole():
    parts = [("filters", b"\x01" * 10), ("maps", b""), ("profile", b"CVZS-a-reference")]
    payload = groups.encode_group(parts)
    assert groups.group_parts(payload) == parts
    assert groups.group_part(payload, "profile") == b"CVZS-a-reference"
    assert groups.stored_records("3/@filters+maps+profile", payload) == parts
    assert groups.stored_records("3/maps", b"a record") == [("maps", b"a record")]
    assert groups.stored_records(groups.COMMIT_TAG, b"a commit") == [("commit", b"a commit")]
    with pytest.raises(ValueError, match="no 'kernels' record"):
        groups.group_part(payload, "kernels")
    for broken, why in ((payload[:-1], "truncated"), (payload + b"x", "longer"), (payload[:6], "truncated"),
                        (b"CVZ1" + payload[4:], "not one"), (payload[:8] + b"{" + payload[9:], "header")):
        with pytest.raises(ValueError, match=why):
            groups.group_parts(broken)


def test_a_group_names_its_kinds_and_one_this_version_does_not_know_costs_that_kind_alone():
    meta = fmt.parse_plugin_content(fmt.plugin_content(groups.KIND_GROUP, ["maps", "filters"]))
    assert meta["kinds"] == ["filters", "maps"] and fmt.known_kinds(meta) == (["filters", "maps"], [])
    later = fmt.parse_plugin_content(json.dumps({"version": fmt.FORMAT_VERSION, "kind": "group", "kinds": ["maps", "sparkles"]}).encode())
    assert fmt.known_kinds(later) == (["maps"], ["sparkles"])
    assert fmt.known_kinds(fmt.parse_plugin_content(fmt.plugin_content("commit"))) == (["commit"], [])
    for kinds, why in ((["sparkles"], "none this version reads"), (["commit"], "none this version reads"),
                       ("maps", "not a list"), ([], "not a list"), ([3], "not a list")):
        with pytest.raises(ValueError, match=why):
            fmt.parse_plugin_content(json.dumps({"version": fmt.FORMAT_VERSION, "kind": "group", "kinds": kinds}).encode())


def test_selecting_filters_decodes_the_same_values_as_the_whole_array():
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(7, 3, 3, 3)).astype(np.float32)
    maps = rng.normal(size=(4, 7, 5, 5)).astype(np.float32)
    stats = rng.normal(size=7).astype(np.float32)
    b = fmt.decode_bundle(
        fmt.encode_bundle({"kernel": ("q8", kernel, 1), "maps": ("q8", maps, 2), "stats": ("f32", stats, 0)}, {})
    )
    np.testing.assert_array_equal(b.array("kernel", 5), b.array("kernel")[5])
    np.testing.assert_array_equal(b.array("kernel", np.array([6, 0, 2])), b.array("kernel")[[6, 0, 2]])
    np.testing.assert_array_equal(b.array("maps", (slice(None), 3)), b.array("maps")[:, 3])
    assert b.array("stats", 4) == stats[4]
    assert b.shape("maps") == (4, 7, 5, 5)


def test_f16s_keeps_three_digits_over_eight_decades_and_non_finite_values():
    # Drift of a frozen filter next to a moving one: 1e-8 … 1.7 in one array.
    a = np.array([1.7, 0.3, 2.5e-3, 4.1e-6, 1.3e-8, 0.0, -0.9, np.nan, np.inf, -np.inf])
    b = fmt.decode_bundle(fmt.encode_bundle({"drift": ("f16s", a, 0)}, {}))
    back = b.array("drift")
    finite = np.isfinite(a)
    np.testing.assert_allclose(back[finite], a[finite], rtol=2**-11, atol=0)
    assert np.isnan(back[7]) and back[8] == np.inf and back[9] == -np.inf
    assert b.wire("drift")["scale"] > 0 and b._header["drift"]["nbytes"] == 2 * a.size
    # Magnitudes beyond float16's range are scaled into it rather than overflowing.
    huge = np.array([3e9, -1e7, 12.0])
    np.testing.assert_allclose(fmt.decode_bundle(fmt.encode_bundle({"x": ("f16s", huge, 0)}, {})).array("x"), huge, rtol=2**-11)
    np.testing.assert_allclose(fmt.decode_bundle(fmt.encode_bundle({"x": ("f16s", huge, 0)}, {})).array("x", 1), -1e7, rtol=2**-11)


def test_integers_take_sixteen_bits_when_they_fit_and_read_back_widened():
    counts = np.array([-1, 0, 32767, -32768])
    assert fmt.integer_encoding(counts)[0] == "i16"
    assert fmt.integer_encoding(np.array([0, 40000]))[0] == "i32"
    assert fmt.integer_encoding(np.array([True, False]))[0] == "u8"
    b = fmt.decode_bundle(fmt.encode_bundle({"n": fmt.integer_encoding(counts)}, {}))
    back = b.array("n")
    assert back.dtype == np.int32  # arithmetic on a read count cannot wrap at 16 bits
    np.testing.assert_array_equal(back, counts)
    assert int(back[2]) + 1 == 32768
