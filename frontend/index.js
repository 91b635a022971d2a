// Entry point TensorBoard imports inside the CONVVIZ tab's iframe; it calls render().

import { Store } from "./static/store.js";
import { mountCka } from "./static/views/cka.js";
import { mountCompare } from "./static/views/compare.js";
import { mountCost } from "./static/views/cost.js";
import { mountDetail } from "./static/views/detail.js";
import { mountEmbedding } from "./static/views/embedding.js";
import { mountFindings } from "./static/views/findings.js";
import { mountImpact } from "./static/views/impact.js";
import { mountLayerView } from "./static/views/layer.js";
import { mountProblems } from "./static/views/problems.js";
import { mountRanking } from "./static/views/ranking.js";
import { mountSlider } from "./static/views/slider.js";
import { mountStatus } from "./static/views/status.js";
import { mountToolbar } from "./static/views/toolbar.js";
import { mountNewerNotice, mountVersionLine } from "./static/views/version.js";
import { keepViewStateInUrl, wantedViewState } from "./static/urlstate.js";

export function render() {
  const style = document.createElement("link");
  style.rel = "stylesheet";
  style.href = new URL("./static/convviz.css", import.meta.url).href;
  document.head.append(style);
  const meta = document.createElement("meta");
  meta.name = "color-scheme";
  meta.content = "light dark";
  document.head.append(meta);

  const store = new Store();
  const app = document.createElement("div");
  app.className = "cvz-app";
  app.dataset.testid = "convviz-root";
  const main = document.createElement("main");
  main.className = "cvz-main";
  const primary = document.createElement("div");
  primary.className = "cvz-primary";
  const side = document.createElement("aside");
  side.className = "cvz-side";
  main.append(primary, side);

  mountToolbar(app, store);
  mountSlider(app, store);
  mountCost(app, store);
  mountStatus(app, store);
  mountProblems(app, store);
  mountNewerNotice(app, store);
  app.append(main);
  mountFindings(primary, store);
  mountLayerView(primary, store);
  mountCompare(primary, store);
  mountImpact(primary, store);
  mountCka(primary, store);
  mountEmbedding(primary, store);
  mountRanking(side, store);
  mountDetail(side, store);
  mountVersionLine(app, store);
  document.body.append(app);
  const wanted = wantedViewState(); // read before the store's first answers rewrite the address
  keepViewStateInUrl(store);
  store.load(wanted);
}
