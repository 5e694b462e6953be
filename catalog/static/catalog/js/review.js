/* Review queue keyboard: 1–5 accept that suggestion, c choose a category, r reject, j/k move,
   u undo the last decision (the listing comes back as the current one).
   Actions are posted with fetch (the server answers JSON to "X-Requested-With: fetch"); without
   JavaScript every button is a plain form post. */
(function () {
  "use strict";

  var list = document.querySelector("[data-review-list]");
  if (!list) return;
  var status = document.getElementById("review-status");
  var picker = document.getElementById("category-picker");
  var search = document.getElementById("picker-search");
  var options = document.getElementById("picker-options");
  var current = null;

  function items() {
    return Array.prototype.slice.call(list.querySelectorAll("[data-review-item]:not(.is-done)"));
  }

  function select(item, focus) {
    if (current) current.classList.remove("is-current");
    current = item || null;
    if (!current) return;
    current.classList.add("is-current");
    if (focus !== false) current.focus({ preventScroll: true });
    current.scrollIntoView({ block: "nearest" });
  }

  function move(step) {
    var all = items();
    if (!all.length) return;
    var index = all.indexOf(current);
    select(all[Math.max(0, Math.min(all.length - 1, index + step))]);
  }

  function say(message, isError) {
    status.textContent = message;
    status.classList.toggle("is-error", !!isError);
  }

  // POST `data` as the page's own forms do; resolves to { ok, body } with the JSON answer.
  function send(url, data) {
    return fetch(url, {
      method: "POST",
      body: data,
      headers: { "X-Requested-With": "fetch" },
      credentials: "same-origin",
    }).then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, body: body }; });
    });
  }

  function post(form, extra) {
    var item = form.closest("[data-review-item]");
    var data = new FormData(form);
    Object.keys(extra || {}).forEach(function (key) { data.set(key, extra[key]); });
    return send(form.action, data)
      .then(function (result) {
        say(result.body.message, !result.ok);
        if (result.ok && form.hasAttribute("data-keep-item")) {
          var row = form.closest("[data-photo-label]");
          if (row) row.classList.add("is-labelled");
        } else if (result.ok && item) {
          var next = items()[items().indexOf(item) + 1] || items()[items().indexOf(item) - 1];
          item.classList.add("is-done");
          item.setAttribute("data-decided", "1");
          select(next);
        }
      })
      .catch(function () { say("The decision could not be sent; try again.", true); });
  }

  // ---- undo ---------------------------------------------------------------------------------

  var undoForm = document.querySelector("form[data-undo]");

  function undo() {
    if (!undoForm) return;
    send(undoForm.action, new FormData(undoForm))
      .then(function (result) {
        say(result.body.message, !result.ok);
        if (!result.ok || !result.body.listing) return;
        var item = list.querySelector('[data-review-item="' + result.body.listing + '"]');
        if (!item) return;
        item.classList.remove("is-done");
        item.removeAttribute("data-decided");
        item.setAttribute("data-undone", "1");
        select(item);
      })
      .catch(function () { say("The undo could not be sent; try again.", true); });
  }

  if (undoForm) {
    undoForm.addEventListener("submit", function (event) { event.preventDefault(); undo(); });
  }

  list.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches("[data-action]")) return;
    event.preventDefault();
    post(form);
  });

  list.addEventListener("focusin", function (event) {
    var item = event.target.closest("[data-review-item]");
    if (item && item !== current) select(item, false);
  });

  function openPicker(item) {
    if (!item || !picker) return;
    select(item, false);
    search.value = "";
    filter("");
    if (typeof picker.showModal === "function") picker.showModal(); else picker.setAttribute("open", "");
    search.focus();
  }

  function closePicker() {
    if (picker.open) picker.close();
    if (current) current.focus({ preventScroll: true });
  }

  function filter(query) {
    query = query.trim().toLowerCase();
    Array.prototype.forEach.call(options.querySelectorAll("[data-filter-text]"), function (row) {
      row.hidden = query !== "" && row.dataset.filterText.indexOf(query) < 0;
    });
  }

  function choose(categoryId) {
    var item = current;
    closePicker();
    if (!item) return;
    var form = item.querySelector('form[data-action="correct"]');
    post(form, { category: categoryId });
  }

  if (picker) {
    search.addEventListener("input", function () { filter(search.value); });
    search.addEventListener("keydown", function (event) {
      if (event.key === "Enter") {
        event.preventDefault();
        var first = options.querySelector("[data-filter-text]:not([hidden]) [data-category]");
        if (first) choose(first.dataset.category);
      }
    });
    options.addEventListener("click", function (event) {
      var button = event.target.closest("[data-category]");
      if (button) choose(button.dataset.category);
    });
    picker.addEventListener("close", function () { if (current) current.focus({ preventScroll: true }); });
  }

  list.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-open-picker]");
    if (opener) openPicker(opener.closest("[data-review-item]"));
  });

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    if (picker && picker.open) return;
    var target = event.target;
    if (target.closest("input, select, textarea, [contenteditable]")) return;
    if (event.key === "u") { event.preventDefault(); undo(); return; }
    if (!current) select(items()[0], false);
    if (!current) return;
    var key = event.key;
    if (key >= "1" && key <= "5") {
      var form = current.querySelector('form[data-action="accept"][data-rank="' + key + '"]');
      if (form) { event.preventDefault(); post(form); }
    } else if (key === "c") {
      event.preventDefault();
      openPicker(current);
    } else if (key === "r") {
      event.preventDefault();
      post(current.querySelector('form[data-action="reject"]'));
    } else if (key === "j" || key === "ArrowDown") {
      event.preventDefault();
      move(1);
    } else if (key === "k" || key === "ArrowUp") {
      event.preventDefault();
      move(-1);
    }
  });

  select(items()[0], false);
})();
