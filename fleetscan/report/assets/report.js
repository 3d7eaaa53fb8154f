// Sort a table by clicking a header (numbers as numbers); filter its rows with the box above it.
document.querySelectorAll('table.data').forEach(function(table){
 var input=document.createElement('input');input.className='filter';input.placeholder='filter rows...';
 input.setAttribute('data-for',table.id);table.parentNode.insertBefore(input,table);
 input.addEventListener('input',function(){var q=input.value.toLowerCase();
  table.querySelectorAll('tbody tr').forEach(function(r){r.style.display=r.textContent.toLowerCase().indexOf(q)>=0?'':'none';});});
 table.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){
  var asc=!th.classList.contains('sorted-asc');table.querySelectorAll('th').forEach(function(h){h.classList.remove('sorted-asc','sorted-desc');});
  th.classList.add(asc?'sorted-asc':'sorted-desc');var body=table.tBodies[0];
  var rows=Array.prototype.slice.call(body.rows);rows.sort(function(a,b){
   var x=a.cells[i].getAttribute('data-v')||a.cells[i].textContent,y=b.cells[i].getAttribute('data-v')||b.cells[i].textContent;
   var nx=parseFloat(x),ny=parseFloat(y);var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return asc?c:-c;});
  rows.forEach(function(r){body.appendChild(r);});});});});
