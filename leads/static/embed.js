/* nurture form embed: <div id="nurture-form-KEY"></div>
 *   <script src="https://YOUR-NURTURE/v1/forms/KEY/embed.js" async></script>
 * Renders the form into #nurture-form-KEY (or right after the script tag), posts it as JSON,
 * shows errors next to the fields and a thank-you message. Sends the visitor id and the page's
 * utm parameters. No external assets. The form definition below is filled in by the server.
 */
(function () {
  "use strict";
  var form = /*__NURTURE_FORM__*/null;
  if (!form) return;
  var script = document.currentScript;
  var base = script && script.src ? new URL(script.src).origin : "";
  var ru = /^ru/i.test(document.documentElement.lang || navigator.language || "");
  var T = ru
    ? { send: "Отправить", sending: "Отправляем…", thanks: "Спасибо! Мы получили вашу заявку.", failed: "Не удалось отправить форму. Попробуйте ещё раз.", required: "Обязательное поле", busy: "Слишком много попыток. Попробуйте через минуту." }
    : { send: "Send", sending: "Sending…", thanks: "Thank you! We have received your request.", failed: "The form could not be sent. Please try again.", required: "This field is required", busy: "Too many attempts. Please try again in a minute." };
  var UTM = ["utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term"];

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    for (var k in attrs || {}) if (attrs[k] !== undefined && attrs[k] !== null && attrs[k] !== false) node.setAttribute(k, attrs[k] === true ? "" : attrs[k]);
    if (text) node.textContent = text; // labels are text, never HTML
    return node;
  }
  function cookie(name) {
    var m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }
  function visitorId() {
    if (window.nurture && window.nurture.visitorId) return window.nurture.visitorId;
    var id = cookie("nurture_vid");
    try { id = id || localStorage.getItem("nurture_vid"); } catch (e) { /* storage blocked */ }
    return id;
  }
  function utm() {
    var params = new URLSearchParams(location.search), out = {};
    UTM.forEach(function (k) { if (params.get(k)) out[k] = params.get(k); });
    if (!Object.keys(out).length) {
      try { out = (JSON.parse(localStorage.getItem("nurture_utm") || "null") || {}).utm || {}; } catch (e) { out = {}; }
    }
    return out;
  }

  var id = "nurture-" + form.key;
  var root = document.getElementById("nurture-form-" + form.key);
  if (!root) { root = el("div", { id: "nurture-form-" + form.key }); script.parentNode.insertBefore(root, script.nextSibling); }
  var node = el("form", { "class": "nurture-form", novalidate: true });
  var errors = {};

  function row(name, control, labelText, checkbox) {
    var wrap = el("div", { "class": "nurture-field nurture-field-" + name });
    var label = el("label", { "for": id + "-" + name });
    if (checkbox) { label.appendChild(control); label.appendChild(document.createTextNode(" " + labelText)); wrap.appendChild(label); }
    else { label.textContent = labelText; wrap.appendChild(label); wrap.appendChild(control); }
    var error = el("div", { "class": "nurture-error", role: "alert", style: "color:#b00020;font-size:.9em" });
    wrap.appendChild(error);
    errors[name] = error;
    node.appendChild(wrap);
  }

  form.fields.forEach(function (f) {
    var attrs = { id: id + "-" + f.name, name: f.name, required: !!f.required, maxlength: f.max_length, placeholder: f.placeholder };
    var label = f.label + (f.required ? " *" : "");
    if (f.type === "hidden") { node.appendChild(el("input", { type: "hidden", name: f.name })); return; }
    if (f.type === "textarea") { row(f.name, el("textarea", attrs), label); return; }
    if (f.type === "select") {
      var select = el("select", attrs);
      select.appendChild(el("option", { value: "" }, "—"));
      (f.choices || []).forEach(function (c) { select.appendChild(el("option", { value: c.value }, c.label)); });
      row(f.name, select, label); return;
    }
    if (f.type === "checkbox") { attrs.type = "checkbox"; attrs.value = "on"; row(f.name, el("input", attrs), label, true); return; }
    attrs.type = { email: "email", phone: "tel", number: "text", date: "date" }[f.type] || "text";
    if (f.type === "email") attrs.autocomplete = "email";
    if (f.type === "phone") attrs.autocomplete = "tel";
    if (f.type === "number") attrs.inputmode = "decimal";
    row(f.name, el("input", attrs), label);
  });
  if (form.consent) {
    row("consent", el("input", { id: id + "-consent", type: "checkbox", name: "consent", value: "on", required: !!form.consent.required }), form.consent.wording, true);
  }
  // The honeypot: invisible to people (off-screen, not focusable), filled in by naive bots.
  var trap = el("div", { "aria-hidden": "true", style: "position:absolute;left:-10000px;top:auto;width:1px;height:1px;overflow:hidden" });
  trap.appendChild(el("input", { type: "text", name: form.honeypot, tabindex: "-1", autocomplete: "off" }));
  node.appendChild(trap);
  var general = el("div", { "class": "nurture-error", role: "alert", style: "color:#b00020" });
  node.appendChild(general);
  var button = el("button", { type: "submit" }, T.send);
  node.appendChild(button);
  root.appendChild(node);

  function clearErrors() { for (var k in errors) errors[k].textContent = ""; general.textContent = ""; }

  node.addEventListener("submit", function (e) {
    e.preventDefault();
    clearErrors();
    var data = {};
    Array.prototype.forEach.call(node.elements, function (input) {
      if (!input.name) return;
      data[input.name] = input.type === "checkbox" ? input.checked : input.value;
    });
    var missing = form.fields.filter(function (f) { return f.required && f.type !== "hidden" && !data[f.name]; });
    if (form.consent && form.consent.required && !data.consent) missing.push({ name: "consent" });
    if (missing.length) { missing.forEach(function (f) { errors[f.name].textContent = T.required; }); return; }
    var marks = utm();
    for (var k in marks) data[k] = marks[k];
    data._vid = visitorId();
    data._page = location.href;
    data._referrer = document.referrer;
    button.disabled = true; button.textContent = T.sending;
    fetch(base + "/v1/forms/" + encodeURIComponent(form.key) + "/submit", {
      method: "POST", headers: { "Content-Type": "application/json", "Accept": "application/json" }, body: JSON.stringify(data)
    }).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (body) { return { status: resp.status, body: body }; });
    }).then(function (r) {
      button.disabled = false; button.textContent = T.send;
      if (r.status === 201) {
        if (form.success_url) { location.href = new URL(form.success_url, base || location.href).href; return; }
        root.textContent = "";
        root.appendChild(el("p", { "class": "nurture-thanks", role: "status" }, T.thanks));
        return;
      }
      var error = (r.body && r.body.error) || {};
      if (r.status === 429) { general.textContent = T.busy; return; }
      if (error.field && errors[error.field]) errors[error.field].textContent = error.message || T.failed;
      else general.textContent = error.message || T.failed;
    }).catch(function () {
      button.disabled = false; button.textContent = T.send; general.textContent = T.failed;
    });
  });
})();
