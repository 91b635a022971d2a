// Side by side (work in progress).

/** @param {HTMLElement} root @param {import("../store.js").Store} store */
export function mountCompare(root, store) {
  const card = document.createElement("section");
  card.className = "cvz-card";
  card.dataset.testid = "compare-view";
  root.append(card);
  store.subscribe((s) => {
    card.hidden = s.mode === "filters";
  });
}
