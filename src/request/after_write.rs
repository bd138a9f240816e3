//! Work a handler leaves for after the response has been written: a WSGI
//! result's `close()` that hyper's end of a sized body would otherwise run
//! before the response is flushed. The worker's flusher (the task that
//! writes the batched responses at the end of each turn of the event loop)
//! runs it, after its writes; it is woken for it, so that the work waits
//! one turn at most, whichever front end sent the response.

use std::cell::RefCell;

type Work = Box<dyn FnOnce()>;

thread_local! {
    static LEFT: RefCell<Vec<Work>> = const { RefCell::new(Vec::new()) };
    /// Wakes the runner; none on a thread without one (a Python thread of
    /// the pool, a test), where work runs at once.
    static WAKE: RefCell<Option<Box<dyn Fn()>>> = const { RefCell::new(None) };
}

/// Makes `wake` this thread's way to get `run_left` called soon.
pub fn install_runner(wake: Box<dyn Fn()>) {
    WAKE.with(|w| *w.borrow_mut() = Some(wake));
}

/// Runs `work` once this turn's responses are written, or now if this
/// thread has no runner.
pub fn after_write(work: impl FnOnce() + 'static) {
    let deferred = WAKE.with(|w| match &*w.borrow() {
        Some(wake) => {
            LEFT.with(|l| l.borrow_mut().push(Box::new(work)));
            wake();
            None
        }
        None => Some(work),
    });
    if let Some(work) = deferred {
        work();
    }
}

/// The runner is gone (the event loop has ended): runs what was left, and
/// from now on work runs at once. Called once the runtime is dropped, whose
/// last tasks (connections cut by the stop) may leave some.
pub fn finish() {
    WAKE.with(|w| *w.borrow_mut() = None);
    run_left();
}

/// Runs the work left so far (the runner's part).
pub fn run_left() {
    loop {
        // Taken out first: the work may leave more.
        let left = LEFT.with(|l| std::mem::take(&mut *l.borrow_mut()));
        if left.is_empty() {
            return;
        }
        for work in left {
            work();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn work_waits_for_the_runner_when_there_is_one() {
        let done = Rc::new(RefCell::new(Vec::new()));
        let d = done.clone();
        after_write(move || d.borrow_mut().push("no runner: at once"));
        assert_eq!(*done.borrow(), ["no runner: at once"]);
        let woken = Rc::new(RefCell::new(0));
        let w = woken.clone();
        install_runner(Box::new(move || *w.borrow_mut() += 1));
        let d = done.clone();
        after_write(move || {
            d.borrow_mut().push("left");
            let d = d.clone();
            after_write(move || d.borrow_mut().push("left by the left"));
        });
        assert_eq!(done.borrow().len(), 1);
        assert_eq!(*woken.borrow(), 1);
        run_left();
        assert_eq!(
            *done.borrow(),
            ["no runner: at once", "left", "left by the left"]
        );
    }
}
