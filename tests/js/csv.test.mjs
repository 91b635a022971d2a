// CSV text and download names (frontend/csv.js).
import assert from "node:assert/strict";
import test from "node:test";

import { csvField, downloadName, toCsv } from "../../frontend/csv.js";

test("csvField quotes only what needs it, doubling quotes", () => {
  assert.equal(csvField("-8.3%"), "-8.3%");
  assert.equal(csvField("a,b"), '"a,b"');
  assert.equal(csvField('say "hi"'), '"say ""hi"""');
  assert.equal(csvField("two\nlines"), '"two\nlines"');
  assert.equal(csvField(""), "");
});

test("toCsv joins rows with CRLF and ends with one", () => {
  assert.equal(toCsv([["Filter", "Flags"], ["#2", "no_red; class 1"], ["#0", ""]]), "Filter,Flags\r\n#2,no_red; class 1\r\n#0,\r\n");
  assert.equal(toCsv([["σ=0.5", "x,y"]]), 'σ=0.5,"x,y"\r\n');
});

test("downloadName makes one safe file name from hostile parts", () => {
  assert.equal(downloadName(["convviz", "<img src=x onerror=alert(1)>", "layer1.conv", "step 5", "impact"], "csv"),
    "convviz_img-src-x-onerror-alert-1_layer1.conv_step-5_impact.csv");
  assert.equal(downloadName(["convviz", "../../etc/passwd"], "png"), "convviz_etc-passwd.png");
  assert.equal(downloadName(["", "///"], "png"), "convviz.png");
  assert.equal(downloadName(["Δloss", 3], "png"), "Δloss_3.png");
  assert.equal(downloadName(["impact_3class", "layer1"], "csv"), "impact_3class_layer1.csv");
});
