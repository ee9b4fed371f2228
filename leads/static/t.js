/* nurture first-party tracker: <script src="https://YOUR-NURTURE/t.js" async></script>
 * Keeps a visitor id (cookie nurture_vid + localStorage), remembers utm_* from the landing URL,
 * sends page views and file downloads to /v1/events, and adds the visitor id, page and utm to
 * plain HTML forms that post to /v1/forms/.../submit. No external assets, no third-party cookies.
 */
(function () {
  "use strict";
  if (window.nurture && window.nurture.visitorId) return; // included twice
  var script = document.currentScript;
  var base = (script && script.getAttribute("data-endpoint")) || (script && script.src ? new URL(script.src).origin : "");
  var UTM = ["utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term"];
  var UTM_DAYS = 30;
  var DOWNLOAD = /\.(pdf|docx?|xlsx?|pptx?|zip|rar|7z|csv|txt|rtf|odt|ods)$/i;

  function store(key, value) {
    try { if (value === undefined) return localStorage.getItem(key); localStorage.setItem(key, value); } catch (e) { return null; }
    return value;
  }
  function readCookie(name) {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === name) return decodeURIComponent(parts[i].slice(eq + 1));
    }
    return null;
  }
  function writeCookie(name, value) {
    var secure = location.protocol === "https:" ? "; Secure" : "";
    document.cookie = name + "=" + encodeURIComponent(value) + "; Max-Age=" + 60 * 60 * 24 * 400 + "; Path=/; SameSite=Lax" + secure;
  }
  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID().replace(/-/g, "");
    var bytes = new Uint8Array(16);
    (window.crypto || window.msCrypto).getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }
  var VALID = /^[A-Za-z0-9_.:-]{8,64}$/;

  var vid = readCookie("nurture_vid");
  if (!vid || !VALID.test(vid)) vid = store("nurture_vid");
  if (!vid || !VALID.test(vid)) vid = newId();
  writeCookie("nurture_vid", vid); // refreshes the expiry on every visit
  store("nurture_vid", vid);

  // utm_* from this URL win; otherwise the ones remembered from the landing page (30 days).
  var params = new URLSearchParams(location.search);
  var utm = {};
  UTM.forEach(function (k) { if (params.get(k)) utm[k] = params.get(k).slice(0, 500); });
  if (Object.keys(utm).length) {
    store("nurture_utm", JSON.stringify({ at: Date.now(), utm: utm }));
  } else {
    try {
      var saved = JSON.parse(store("nurture_utm") || "null");
      if (saved && Date.now() - saved.at < UTM_DAYS * 864e5) utm = saved.utm || {};
    } catch (e) { utm = {}; }
  }

  function send(type, properties) {
    var event = { type: type, visitor_id: vid, url: location.href.slice(0, 2000), referrer: document.referrer.slice(0, 2000) || null, title: (document.title || "").slice(0, 500) || null, properties: properties || {} };
    UTM.forEach(function (k) { if (utm[k]) event[k] = utm[k]; });
    var body = JSON.stringify(event);
    var url = base + "/v1/events";
    // text/plain keeps the request "simple": no CORS preflight, works while the page unloads.
    if (navigator.sendBeacon && navigator.sendBeacon(url, new Blob([body], { type: "text/plain;charset=UTF-8" }))) return;
    if (window.fetch) fetch(url, { method: "POST", body: body, keepalive: true, mode: "no-cors", headers: { "Content-Type": "text/plain;charset=UTF-8" } });
  }

  function addHidden(form, name, value) {
    if (!value || form.querySelector('[name="' + name + '"]')) return;
    var input = document.createElement("input");
    input.type = "hidden"; input.name = name; input.value = value;
    form.appendChild(input);
  }
  // Plain HTML forms posting to nurture carry the visitor id and the page's utm along.
  document.addEventListener("submit", function (e) {
    var form = e.target;
    var action = form && form.getAttribute && (form.getAttribute("action") || "");
    if (!/\/v1\/forms\/[^/]+\/submit/.test(action)) return;
    addHidden(form, "_vid", vid);
    addHidden(form, "_page", location.href.slice(0, 2000));
    addHidden(form, "_referrer", document.referrer.slice(0, 2000));
    UTM.forEach(function (k) { addHidden(form, k, utm[k]); });
  }, true);

  document.addEventListener("click", function (e) {
    var link = e.target && e.target.closest ? e.target.closest("a[href]") : null;
    if (link && DOWNLOAD.test(link.pathname || "")) send("download", { href: link.href.slice(0, 2000) });
  }, true);

  window.nurture = { visitorId: vid, utm: utm, track: send };
  send("page_view");
})();
