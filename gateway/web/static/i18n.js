// Translations (docs/webui.md 6): every visible string comes from i18n/<language>.json.
//
// Invariants:
// - keys are always written as string literals, as the first argument of t, tn or key, or in
//   `data-i18n*` attributes, so tests/gateway/web/test_i18n.py can find every key used;
// - nl.json and en.json have identical key sets and the same {placeholders} per key;
// - the chosen language lives in localStorage (a preference, never data); nothing else does.

export const LANGUAGES = Object.freeze(["nl", "en"]);
export const FALLBACK_LANGUAGE = "nl"; // the fleet is Dutch: a browser in neither language gets nl
// Dates and numbers as read in the Netherlands; English uses British order (23/11/2026, 07:35).
const LOCALES = Object.freeze({ nl: "nl-NL", en: "en-GB" });
const STORAGE_KEY = "mvb.language";

let current = FALLBACK_LANGUAGE;
let dictionary = {};
let plurals = new Intl.PluralRules(LOCALES[current]);
const cache = new Map();

/** Marks a string literal as a translation key (for tables of keys); returns it unchanged. */
export function key(name) {
  return name;
}

/**
 * The language to show: a stored choice first, then the first of the browser's languages that we
 * have (by primary subtag: "en-GB" counts as "en"), then the fallback. Pure.
 */
export function chooseLanguage(stored, browserLanguages) {
  if (LANGUAGES.includes(stored)) {
    return stored;
  }
  for (const tag of browserLanguages ?? []) {
    const primary = String(tag).toLowerCase().split("-")[0];
    if (LANGUAGES.includes(primary)) {
      return primary;
    }
  }
  return FALLBACK_LANGUAGE;
}

export function storedLanguage() {
  try {
    return window.localStorage.getItem(STORAGE_KEY);
  } catch {
    return null; // storage disabled (private mode): the browser's language decides
  }
}

function rememberLanguage(language) {
  try {
    window.localStorage.setItem(STORAGE_KEY, language);
  } catch {
    // storage disabled: the choice lasts until the page reloads, which is acceptable
  }
}

export function currentLanguage() {
  return current;
}

/** The BCP 47 locale for Intl formatting in the current language. */
export function currentLocale() {
  return LOCALES[current];
}

async function fetchDictionary(language) {
  if (!cache.has(language)) {
    const url = new URL(`./i18n/${language}.json`, import.meta.url);
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) {
      throw new Error(`i18n ${language}: HTTP ${response.status}`);
    }
    cache.set(language, await response.json());
  }
  return cache.get(language);
}

/** Loads and switches to `language`; `remember` stores it as the officer's choice. */
export async function useLanguage(language, { remember = false } = {}) {
  dictionary = await fetchDictionary(language);
  current = language;
  plurals = new Intl.PluralRules(LOCALES[language]);
  document.documentElement.lang = language;
  if (remember) {
    rememberLanguage(language);
  }
}

/** The text for `name` with {placeholders} filled; an unknown key shows itself (a visible bug). */
export function t(name, params = {}) {
  const template = dictionary[name];
  if (typeof template !== "string") {
    return name;
  }
  return template.replace(/\{([a-z_]+)\}/g, (whole, param) =>
    Object.hasOwn(params, param) ? String(params[param]) : whole,
  );
}

/** Plural text: key `name.one` or `name.other` by the language's rules, with {count}. */
export function tn(name, count, params = {}) {
  const form = plurals.select(count) === "one" ? "one" : "other";
  return t(`${name}.${form}`, { ...params, count: formatNumber(count) });
}

export function formatNumber(value, options = {}) {
  return new Intl.NumberFormat(LOCALES[current], options).format(value);
}

/** Fills every element under `root` that names a key in data-i18n (text) or data-i18n-label. */
export function applyTranslations(root) {
  for (const node of root.querySelectorAll("[data-i18n]")) {
    node.textContent = t(node.dataset.i18n);
  }
  for (const node of root.querySelectorAll("[data-i18n-label]")) {
    node.setAttribute("aria-label", t(node.dataset.i18nLabel));
  }
}
