/*
 * Seller pages: photo picking with drag and drop, previews, reordering and removal; downscaling
 * in the browser before upload; reordering of stored photos; the category search; and timings of
 * "upload finished → suggestion visible" (window.sellerTimings, read by the browser tests).
 *
 * Each photo is drawn on a canvas at most MAX_SIDE px on its long side (the browser applies the
 * EXIF orientation when decoding) and sent as JPEG (PNG stays PNG), so a 12 MP phone photo
 * crosses the network as ~300 kB. A file the browser cannot decode (a text file named .jpg) is
 * left out with a message instead of being counted as a photo; the server still checks every
 * file it gets. What a pick leaves out, and why, stays listed under the picker (#photo-notes),
 * apart from the count of photos ready. Messages come from the drop zone's data attributes
 * (catalog/forms.py), so the pages and the tests share them. No dependencies besides htmx.
 *
 * With S3 storage (the form has data-direct-upload), each photo goes straight to the bucket as
 * soon as it is prepared: the web app signs one POST per photo, the browser sends the file there,
 * and the form carries only the tokens naming the uploads, never the photo's bytes.
 */
(function () {
  "use strict";

  var MAX_SIDE = 1600;
  var JPEG_QUALITY = 0.88;
  var UPLOAD_FAILED = "The photo could not be uploaded; check your connection and try again.";
  var timings = (window.sellerTimings = window.sellerTimings || {});
  // Notes of a pick that uploads at once (edit page): shown again after htmx swaps the section.
  var carriedNotes = [];

  function photoCount(n) { return n + " photo" + (n === 1 ? "" : "s"); }

  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, function (match, key) {
      return Object.prototype.hasOwnProperty.call(values, key) ? values[key] : match;
    });
  }

  /** Show `lines` (what was left out of the last pick, and why) under the photo picker. */
  function showNotes(lines) {
    var list = document.getElementById("photo-notes");
    if (!list) return;
    list.textContent = "";
    lines.forEach(function (line) {
      var li = document.createElement("li");
      li.textContent = line;
      list.appendChild(li);
    });
    list.hidden = !lines.length;
  }

  // ---- downscaling ---------------------------------------------------------------------------

  function decode(file) {
    if (window.createImageBitmap) {
      return createImageBitmap(file, { imageOrientation: "from-image" });
    }
    return new Promise(function (resolve, reject) {
      var url = URL.createObjectURL(file);
      var img = new Image();
      img.onload = function () { resolve(img); };
      img.onerror = function () { URL.revokeObjectURL(url); reject(new Error("undecodable")); };
      img.src = url;
    });
  }

  function renamed(name, type) {
    var stem = name.replace(/\.[^.]*$/, "") || "photo";
    return stem + (type === "image/png" ? ".png" : ".jpg");
  }

  /** Resolve to {file, readable}: the photo at most MAX_SIDE px (or the original file when it is
   * already small and accepted), or readable false when the browser cannot decode it. */
  function downscale(file) {
    return decode(file).then(function (image) {
      var width = image.width, height = image.height;
      var scale = Math.min(1, MAX_SIDE / Math.max(width, height));
      var accepted = ["image/jpeg", "image/png", "image/webp"].indexOf(file.type) >= 0;
      if (scale === 1 && accepted) {
        if (image.close) image.close();
        return { file: file, readable: true };
      }
      var canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(width * scale));
      canvas.height = Math.max(1, Math.round(height * scale));
      var context = canvas.getContext("2d");
      context.imageSmoothingQuality = "high";
      context.drawImage(image, 0, 0, canvas.width, canvas.height);
      if (image.close) image.close();
      var type = file.type === "image/png" ? "image/png" : "image/jpeg";
      return new Promise(function (resolve) {
        canvas.toBlob(function (blob) {
          if (!blob) { resolve({ file: file, readable: true }); return; }
          var out = new File([blob], renamed(file.name, type), { type: type, lastModified: Date.now() });
          resolve({ file: out, readable: true });
        }, type, JPEG_QUALITY);
      });
    }).catch(function () {
      return { file: file, readable: false };
    });
  }

  // ---- direct uploads to the bucket (S3 storage) ---------------------------------------------

  function csrfToken(form) {
    var field = form.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  function postToBucket(upload, file) {
    var data = new FormData();
    Object.keys(upload.fields).forEach(function (name) { data.append(name, upload.fields[name]); });
    data.append("file", file);  // last: S3 ignores fields after the file
    return fetch(upload.url, { method: "POST", body: data }).then(function (response) {
      return response.ok ? { token: upload.token } : { error: UPLOAD_FAILED };
    }, function () { return { error: UPLOAD_FAILED }; });
  }

  /** Resolve to one {token} or {error} per file, in order: the web app signs a POST per file
   *  (or says why it never could be accepted), then each file goes straight to the bucket. */
  function uploadToBucket(form, files) {
    var described = files.map(function (file) { return { name: file.name, type: file.type, size: file.size }; });
    return fetch(form.dataset.directUpload, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(form) },
      body: JSON.stringify({ files: described }),
    }).then(function (response) {
      if (!response.ok) throw new Error("no presigned upload");
      return response.json();
    }).then(function (answer) {
      return Promise.all(answer.uploads.map(function (upload, index) {
        return upload.error ? { error: upload.error } : postToBucket(upload, files[index]);
      }));
    }).catch(function () {
      return files.map(function () { return { error: UPLOAD_FAILED }; });
    });
  }

  // ---- a form with a photo picker (create page, "add photos" on the edit page) ---------------

  function setUpPhotoForm(form) {
    if (form.dataset.photoReady) return;
    form.dataset.photoReady = "1";
    var input = form.querySelector("input[type=file][name=photos]");
    var zone = form.querySelector("[data-dropzone]");
    var list = form.querySelector("[data-previews]");
    var status = form.querySelector("[data-photo-status]");
    var submit = form.querySelector("[data-submit]");
    var autosubmit = form.hasAttribute("data-autosubmit");
    var direct = Boolean(form.dataset.directUpload);
    var max = parseInt(zone.dataset.max || "10", 10);
    var leftOutMessage = zone.dataset.msgLeftOut || "{count} left out.";
    var unreadableMessage = zone.dataset.msgUnreadable || "{name} left out: not a photo.";
    var items = [];
    var busy = 0;
    var preparing = 0;  // files picked and still being decoded or uploaded: they take room too

    zone.classList.add("is-enhanced");
    if (autosubmit && submit) submit.hidden = true;
    if (direct) input.removeAttribute("name");  // the bytes go to the bucket, never in this form

    function say(text) { if (status) status.textContent = text; }

    function sync() {
      if (direct) {
        form.querySelectorAll("input[data-upload-token]").forEach(function (field) { field.remove(); });
        items.forEach(function (item) {
          var field = document.createElement("input");
          field.type = "hidden";
          field.name = "uploads";
          field.value = item.token;
          field.setAttribute("data-upload-token", "");
          form.appendChild(field);
        });
        return;
      }
      var transfer = new DataTransfer();
      items.forEach(function (item) { transfer.items.add(item.file); });
      input.files = transfer.files;
    }

    function render() {
      list.textContent = "";
      items.forEach(function (item, index) {
        var li = document.createElement("li");
        li.className = "preview";
        li.draggable = true;
        li.dataset.index = String(index);
        var img = document.createElement("img");
        img.src = item.url;
        img.alt = "Preview of " + item.file.name;
        li.appendChild(img);
        var caption = document.createElement("span");
        caption.className = "preview-caption";
        caption.textContent = (index === 0 ? "Cover · " : "") + Math.max(1, Math.round(item.file.size / 1024)) + " kB";
        li.appendChild(caption);
        var actions = document.createElement("span");
        actions.className = "tile-actions";
        [["←", "Move " + item.file.name + " earlier", -1], ["→", "Move " + item.file.name + " later", 1]].forEach(function (spec) {
          var button = document.createElement("button");
          button.type = "button";
          button.className = "icon-btn";
          button.textContent = spec[0];
          button.setAttribute("aria-label", spec[1]);
          button.disabled = (spec[2] < 0 && index === 0) || (spec[2] > 0 && index === items.length - 1);
          button.addEventListener("click", function () { move(index, index + spec[2]); });
          actions.appendChild(button);
        });
        var remove = document.createElement("button");
        remove.type = "button";
        remove.className = "icon-btn icon-btn-danger";
        remove.textContent = "✕";
        remove.setAttribute("aria-label", "Remove " + item.file.name);
        remove.addEventListener("click", function () {
          URL.revokeObjectURL(item.url);
          items.splice(index, 1);
          changed();
        });
        actions.appendChild(remove);
        li.appendChild(actions);
        list.appendChild(li);
      });
    }

    function changed() {
      render();
      sync();
      if (!autosubmit) say(items.length ? items.length + " photo" + (items.length > 1 ? "s" : "") + " ready" : "");
    }

    function move(from, to) {
      if (to < 0 || to >= items.length) return;
      var moved = items.splice(from, 1)[0];
      items.splice(to, 0, moved);
      changed();
    }

    // Drag to reorder the previews.
    var dragFrom = null;
    list.addEventListener("dragstart", function (event) {
      var li = event.target.closest(".preview");
      if (!li) return;
      dragFrom = parseInt(li.dataset.index, 10);
      event.dataTransfer.effectAllowed = "move";
    });
    list.addEventListener("dragover", function (event) {
      if (dragFrom !== null) event.preventDefault();
    });
    list.addEventListener("drop", function (event) {
      var li = event.target.closest(".preview");
      if (dragFrom === null || !li) return;
      event.preventDefault();
      event.stopPropagation();
      move(dragFrom, parseInt(li.dataset.index, 10));
      dragFrom = null;
    });
    list.addEventListener("dragend", function () { dragFrom = null; });

    function addFiles(fileList) {
      var files = Array.prototype.slice.call(fileList);
      var room = Math.max(0, max - items.length - preparing);
      var notes = [];
      if (files.length > room) {
        notes.push(fill(leftOutMessage, { count: photoCount(files.length - room) }));
        files = files.slice(0, room);
      }
      showNotes(notes);
      if (!files.length) { sync(); return; }
      busy += 1;
      preparing += files.length;
      if (submit) submit.disabled = true;
      say("Preparing " + photoCount(files.length) + "…");
      Promise.all(files.map(downscale)).then(function (results) {
        var readable = results.filter(function (result, index) {
          if (!result.readable) notes.push(fill(unreadableMessage, { name: files[index].name }));
          return result.readable;
        });
        if (!direct || !readable.length) return readable;
        say("Uploading " + photoCount(readable.length) + "…");
        return uploadToBucket(form, readable.map(function (result) { return result.file; })).then(function (answers) {
          return readable.filter(function (result, index) {
            result.token = answers[index].token;
            if (!result.token) notes.push(result.file.name + ": " + answers[index].error);
            return Boolean(result.token);
          });
        });
      }).then(function (results) {
        results.forEach(function (result) {
          items.push({ file: result.file, token: result.token, url: URL.createObjectURL(result.file) });
        });
        busy -= 1;
        preparing -= files.length;
        changed();
        showNotes(notes);
        if (submit) submit.disabled = busy > 0;
        if (autosubmit && busy === 0 && items.length) {
          carriedNotes = notes;
          say("Uploading…");
          form.requestSubmit();
        } else if (autosubmit && busy === 0) {
          say("");
        }
      });
    }

    input.addEventListener("change", function () {
      if (input.dataset.syncing) return;
      var picked = input.files;
      addFiles(picked);
    });
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) {
        if (!event.dataTransfer || Array.prototype.indexOf.call(event.dataTransfer.types, "Files") < 0) return;
        event.preventDefault();
        zone.classList.add("is-over");
      });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function () { zone.classList.remove("is-over"); });
    });
    zone.addEventListener("drop", function (event) {
      if (!event.dataTransfer || !event.dataTransfer.files.length) return;
      event.preventDefault();
      addFiles(event.dataTransfer.files);
    });
    form.addEventListener("submit", function (event) {
      if (busy > 0) { event.preventDefault(); say("Still preparing photos…"); return; }
      timings.uploadStartedAt = performance.now();
    });
  }

  // ---- reordering stored photos (edit page) --------------------------------------------------

  function setUpSortable(grid) {
    if (grid.dataset.sortReady) return;
    grid.dataset.sortReady = "1";
    var dragged = null;
    grid.addEventListener("dragstart", function (event) {
      dragged = event.target.closest("[data-photo-id]");
      if (dragged) event.dataTransfer.effectAllowed = "move";
    });
    grid.addEventListener("dragover", function (event) {
      if (dragged) event.preventDefault();
    });
    grid.addEventListener("drop", function (event) {
      var target = event.target.closest("[data-photo-id]");
      if (!dragged || !target || target === dragged) return;
      event.preventDefault();
      var tiles = Array.prototype.slice.call(grid.querySelectorAll("[data-photo-id]"));
      var before = tiles.indexOf(dragged) > tiles.indexOf(target) ? target : target.nextSibling;
      grid.insertBefore(dragged, before);
      dragged = null;
      var order = Array.prototype.map.call(grid.querySelectorAll("[data-photo-id]"), function (tile) {
        return tile.dataset.photoId;
      });
      window.htmx.ajax("POST", grid.dataset.orderUrl, {
        source: grid, target: "#photos", swap: "outerHTML", values: { order: order.join(",") },
      });
    });
    grid.addEventListener("dragend", function () { dragged = null; });
  }

  // ---- category search -----------------------------------------------------------------------

  function setUpFilter(input) {
    if (input.dataset.filterReady) return;
    input.dataset.filterReady = "1";
    input.addEventListener("input", function () {
      var query = input.value.trim().toLowerCase();
      var list = document.getElementById(input.dataset.filterList);
      if (!list) return;
      Array.prototype.forEach.call(list.querySelectorAll("[data-filter-text]"), function (item) {
        item.hidden = query !== "" && item.dataset.filterText.indexOf(query) < 0;
      });
    });
    input.addEventListener("keydown", function (event) {
      if (event.key !== "Enter") return;  // Enter picks the first match rather than the first category
      event.preventDefault();
      var list = document.getElementById(input.dataset.filterList);
      var first = list && list.querySelector("[data-filter-text]:not([hidden]) button");
      if (first) first.click();
    });
  }

  // ---- upload → suggestion timings -----------------------------------------------------------

  function noteSuggestions() {
    var panel = document.getElementById("suggestions");
    if (!panel || timings.uploadDoneAt == null) return;
    var now = performance.now();
    if (timings.suggestionShownAt == null && parseInt(panel.dataset.suggestionCount || "0", 10) > 0) {
      timings.suggestionShownAt = now;
    }
    if (timings.settledAt == null && panel.dataset.suggestionState !== "pending") {
      timings.settledAt = now;
    }
  }

  function uploadDone(at) {
    timings.uploadDoneAt = at;
    timings.suggestionShownAt = null;
    timings.settledAt = null;
  }

  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt && event.detail.elt.closest && event.detail.elt.closest("[data-photo-form]");
    if (form && event.detail.successful) uploadDone(performance.now());
  });
  new MutationObserver(noteSuggestions).observe(document.documentElement, {
    childList: true, subtree: true, attributes: true, attributeFilter: ["data-suggestion-state"],
  });

  function setUp(root) {
    if (carriedNotes.length && root.querySelector && root.querySelector("#photo-notes")) {
      showNotes(carriedNotes);
      carriedNotes = [];
    }
    root.querySelectorAll("[data-photo-form]").forEach(setUpPhotoForm);
    root.querySelectorAll("[data-sortable]").forEach(setUpSortable);
    root.querySelectorAll("[data-filter-list]").forEach(setUpFilter);
  }

  function start() {
    // The create form's POST answers with a redirect to this page: its end is "upload finished".
    var navigation = performance.getEntriesByType && performance.getEntriesByType("navigation")[0];
    if (navigation && navigation.redirectEnd > 0 && document.getElementById("suggestions")) {
      uploadDone(navigation.redirectEnd);
      noteSuggestions();
    }
    setUp(document);
    if (window.htmx) window.htmx.onLoad(function (element) { setUp(element); });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
