/* The listing form's category field: Enter in its search picks the first category still shown
   (photos.js filters the list as the seller types). The field itself is server-rendered and polled
   by htmx; each poll sends the category picked so far, so a pick survives the refresh. */
(function () {
  "use strict";

  function pickFirst(event) {
    var input = event.target.closest && event.target.closest("[data-pick-first]");
    if (!input || event.key !== "Enter") return;
    event.preventDefault();
    var list = document.getElementById(input.dataset.filterList);
    var first = list && list.querySelector("[data-filter-text]:not([hidden]) input[type=radio]");
    if (first) { first.checked = true; first.focus(); }
  }

  document.addEventListener("keydown", pickFirst);
})();
