// Fills in the visitor's time zone so lessons arrive in their morning. Without JavaScript
// the practice's default time zone is used, and the reader can change it later.
document.addEventListener("DOMContentLoaded", function () {
  var field = document.getElementById("timezone");
  if (field && !field.value && window.Intl) {
    try { field.value = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) {}
  }
});
