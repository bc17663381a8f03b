// DOM building without HTML strings: data from the box only ever becomes textContent or an
// attribute value, never markup (the CSP forbids inline script; this forbids injected markup).

/** The element with `id`; a missing one is a bug in index.html, so fail loudly. */
export function byId(id) {
  const node = document.getElementById(id);
  if (node === null) {
    throw new Error(`index.html has no #${id}`);
  }
  return node;
}

/**
 * A new element. `props`: `text` (textContent), `className`, `testid` (data-testid), `attrs`
 * (plain attributes), `data` (data-* values). Children are nodes or strings (text nodes).
 */
export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  if (props.text !== undefined) {
    node.textContent = props.text;
  }
  if (props.className) {
    node.className = props.className;
  }
  if (props.testid) {
    node.dataset.testid = props.testid;
  }
  for (const [name, value] of Object.entries(props.attrs ?? {})) {
    node.setAttribute(name, String(value));
  }
  for (const [name, value] of Object.entries(props.data ?? {})) {
    node.dataset[name] = String(value);
  }
  node.append(...children);
  return node;
}

/**
 * Rebuilds `node`'s children with `build()` only when `signature` (a string of everything they
 * show) changed: live updates come twice a second, and screen readers re-read replaced nodes.
 */
export function replaceIfChanged(node, signature, build) {
  if (node.dataset.signature === signature) {
    return;
  }
  node.dataset.signature = signature;
  node.replaceChildren(...build());
}

export function setText(id, text) {
  const node = byId(id);
  if (node.textContent !== text) {
    node.textContent = text; // unchanged text keeps screen readers and selections quiet
  }
}

export function show(node, visible) {
  node.hidden = !visible;
}

/** Marks an element's tone for CSS: ok | warning | critical | idle (never inline style). */
export function setTone(node, tone) {
  node.dataset.tone = tone;
}
